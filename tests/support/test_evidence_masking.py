"""An exchange's evidence is masked field by field as it is attached, so the report's file logger writes it as it
is; anything else attached is masked by the file logger."""
import json
import secrets

from support.client import evidence
from support.client.api import Exchange
from support.client.reporting import MaskingFileLogger
from support.harness.redaction import MaskedText, register_secret

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c3JfMSJ9.c2lnbmF0dXJlLWJ5dGVz"


def test_every_field_of_an_exchange_s_evidence_is_masked(monkeypatch):
    password = "pw-" + secrets.token_hex(6)
    register_secret(password, "password")
    attached = []
    monkeypatch.setattr(evidence.allure, "attach", lambda body, **_: attached.append(body))
    cut_off = Exchange("POST", f"http://127.0.0.1:1/auth/login?t={JWT}", "/auth/login", {"Authorization": f"Bearer {JWT}"},
                       {"email": "o@example.test", "password": password}, request_id=f"run.{password}.001",
                       error=f"ConnectionError: no answer to a request carrying {JWT} and {password}")
    evidence.attach_exchange(cut_off)
    (body,) = attached
    assert type(body) is MaskedText
    assert JWT not in body and password not in body
    assert json.loads(body)["request"]["body"]  # the body is shown, masked


def test_the_file_logger_writes_masked_text_as_it_is_and_masks_anything_else(tmp_path):
    password = "pw-" + secrets.token_hex(6)
    register_secret(password, "password")
    logger = MaskingFileLogger(tmp_path)
    logger.report_attached_data(MaskedText("already masked «masked:jwt#abc123»"), "a-attachment.json")
    logger.report_attached_data(f"a note holding {password}", "b-attachment.txt")
    assert (tmp_path / "a-attachment.json").read_text() == "already masked «masked:jwt#abc123»"
    written = (tmp_path / "b-attachment.txt").read_text()
    assert password not in written and "«masked:password#" in written
