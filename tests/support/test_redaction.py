import json

from support.redaction import fingerprint, mask_body, mask_headers, mask_text, register_secret

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c3JfMSJ9.c2lnbmF0dXJlLWJ5dGVz"
KEY = "tg_abcdefghijklmnopqrstuvwxyz012345"


def test_authorization_headers_keep_the_scheme_and_a_fingerprint():
    masked = mask_headers({"Authorization": f"Bearer {JWT}", "Accept": "application/json"})
    assert masked["Authorization"] == f"Bearer «masked:credential#{fingerprint(JWT)}»"
    assert masked["Accept"] == "application/json"


def test_tokens_and_keys_in_free_text_are_masked_with_distinct_fingerprints():
    other = KEY[:-1] + "9"
    text = mask_text(f"key {KEY} and {other} and token {JWT}")
    assert KEY not in text and other not in text and JWT not in text
    assert fingerprint(KEY) != fingerprint(other)
    assert f"#{fingerprint(KEY)}»" in text and f"#{fingerprint(other)}»" in text


def test_secret_named_fields_are_masked_in_bodies_at_any_depth():
    body = {"email": "o@example.test", "password": "correct horse", "nested": [{"refresh_token": "abc123xyz"}],
            "key": "opaque"}
    shown = mask_body(json.dumps(body))
    assert "correct horse" not in shown and "abc123xyz" not in shown and "opaque" not in shown
    assert "o@example.test" in shown


def test_registered_secrets_are_masked_wherever_they_appear():
    register_secret("f" * 64, "hs256-secret")
    assert "f" * 64 not in mask_text("secret=" + "f" * 64)


def test_non_json_bodies_are_masked_as_text():
    assert KEY not in mask_body(f"not json {KEY}")
    assert mask_body(b"\xff\xfe") == "<2 bytes of binary data>"
