"""Registered secrets are matched by one pattern rebuilt now and then, the newest looked for one by one: whatever
the moment, every registered value is masked, and the longest one where several start at one place."""
import re
import secrets

from support.harness import redaction
from support.harness.redaction import mask_text, marker, register_secret


def flat_alternation(text: str) -> str:
    """What masking gives with every registered value in one flat alternation, longest first (the reference)."""
    values = sorted(redaction._known_secrets, key=len, reverse=True)
    text = re.compile("|".join(map(re.escape, values))).sub(
        lambda m: marker(redaction._known_secrets[m.group(0)], m.group(0)), text)
    for kind, pattern in redaction.PATTERNS:
        text = pattern.sub(lambda m, k=kind: marker(k, m.group(0)), text)
    return text


def test_each_secret_is_masked_as_soon_as_it_is_registered_among_hundreds():
    made = []
    for number in range(300):
        value = f"pw-{secrets.token_urlsafe(12)}" if number % 7 else secrets.token_hex(32)
        register_secret(value, "password")
        made.append(value)
        text = f"sent {value} and {made[number // 2]} in {secrets.token_urlsafe(40)}"
        shown = mask_text(text)
        assert value not in shown and made[number // 2] not in shown
        assert shown == flat_alternation(text)


def test_a_secret_containing_another_is_masked_whole_whichever_came_first():
    inner, outer, later = "in-" + secrets.token_hex(4), None, None
    register_secret(inner, "password")
    mask_text("the pattern is built now")
    outer = f"xx{inner}yy"
    register_secret(outer, "api-key")  # registered after the pattern was built
    later = f"{outer}zz"
    register_secret(later, "secret")
    for text in (f"a {outer} b", f"a {later} b", f"a {inner}y b", f"{inner}{outer}"):
        assert mask_text(text) == flat_alternation(text)
    assert mask_text(f"a {later} b") == f"a {marker('secret', later)} b"


def test_a_short_text_masked_before_is_masked_again_once_a_secret_in_it_is_registered():
    value = "pw-" + secrets.token_hex(5)
    header = f"note {value}"
    assert mask_text(header) == header  # masked once, and kept as it was: nothing in it was a secret then
    register_secret(value, "password")
    assert mask_text(header) == f"note {marker('password', value)}"
    register_secret(value, "api-key")  # the same value, now known as another kind
    assert mask_text(header) == f"note {marker('api-key', value)}"


def test_text_the_suite_masked_already_is_passed_through_and_nothing_else_is():
    value = "pw-" + secrets.token_hex(5)
    register_secret(value, "password")
    assert mask_text(redaction.MaskedText(f"masked by its maker {value}")) == f"masked by its maker {value}"
    assert value not in mask_text(f"{value} " * 100)  # longer than the texts kept masked
