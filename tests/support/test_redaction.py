import json

from support.harness.redaction import fingerprint, mask_body, mask_headers, mask_text, register_secret

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


# ---- more kinds of secrets ---------------------------------------------------------------------------------------

def test_a_private_key_in_pem_form_is_masked_whole():
    pem = ("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\nabcdef\n"
           "-----END PRIVATE KEY-----")
    shown = mask_text(f"before\n{pem}\nafter")
    assert "MIGHAgEAMBMG" not in shown and "PRIVATE KEY" not in shown
    assert shown.startswith("before\n«masked:private-key#") and shown.endswith("\nafter")


def test_invitation_tokens_in_paths_are_masked():
    assert "inv_" + "A" * 30 not in mask_text("POST /invitations/inv_" + "A" * 30 + "/accept")


def test_token_type_and_token_counts_are_not_secrets_but_tokens_are():
    shown = json.loads(mask_body({"access_token": "x" * 20, "token_type": "Bearer", "max_tokens": 32,
                                  "id_token": "y" * 20, "usage": {"prompt_tokens": 5}}))
    assert shown["token_type"] == "Bearer" and shown["max_tokens"] == 32 and shown["usage"] == {"prompt_tokens": 5}
    assert shown["access_token"].startswith("«masked:") and shown["id_token"].startswith("«masked:")


def test_mask_strings_keeps_field_names_and_shape():
    from support.harness.redaction import mask_strings
    assert mask_strings({"name": f"uses {KEY}", "n": 1, "list": [JWT]}) == {
        "name": f"uses «masked:api-key#{fingerprint(KEY)}»", "n": 1, "list": [f"«masked:jwt#{fingerprint(JWT)}»"]}


# ---- failure messages ---------------------------------------------------------------------------------------------

def test_an_assertion_is_masked_in_place_keeping_its_type_and_traceback():
    from support.harness.redaction import mask_exception
    try:
        raise AssertionError(f"the body was {{'key': '{KEY}'}}")
    except AssertionError as exc:
        masked = mask_exception(exc)
        assert masked is exc and KEY not in str(exc) and exc.__traceback__ is not None


def test_an_exception_whose_message_is_not_its_args_is_replaced_by_a_masked_one():
    from support.harness.redaction import mask_exception

    class Odd(Exception):
        def __str__(self):
            return f"odd {KEY}"

    masked = mask_exception(Odd())
    assert isinstance(masked, RuntimeError) and KEY not in str(masked) and "Odd:" in str(masked)


def test_chained_exceptions_are_masked_too():
    from support.harness.redaction import mask_exception
    try:
        try:
            raise ValueError(f"inner {JWT}")
        except ValueError:
            raise AssertionError("outer") from None
    except AssertionError as exc:
        mask_exception(exc)
        assert JWT not in str(exc.__context__)


def test_guarded_step_functions_raise_masked_and_keep_their_location():
    from behave.step_registry import StepRegistry

    from support.client.evidence import guard_step_functions

    registry = StepRegistry()

    def leaky_step(context):
        raise AssertionError(f"leaked {KEY}")

    registry.add_step_definition("then", "a leaky step", leaky_step)
    assert guard_step_functions(registry) == 1 and guard_step_functions(registry) == 0  # once only
    [matcher] = registry.steps["then"]
    assert "test_redaction.py" in str(matcher.location)
    try:
        matcher.func(None)
    except AssertionError as exc:
        assert KEY not in str(exc) and f"«masked:api-key#{fingerprint(KEY)}»" in str(exc)
    else:
        raise AssertionError("the step should have failed")


def test_log_records_are_masked_once_installed():
    import logging

    from support.client.evidence import mask_log_records
    saved = logging.getLogRecordFactory()
    try:
        mask_log_records()
        record = logging.getLogger("t").makeRecord("t", logging.INFO, __file__, 1, "token %s", (JWT,), None)
        assert JWT not in record.getMessage() and "«masked:jwt#" in record.getMessage()
    finally:
        logging.setLogRecordFactory(saved)
