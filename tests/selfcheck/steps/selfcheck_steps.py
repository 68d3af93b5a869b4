"""Careless steps, on purpose: they quote raw secrets in failure messages, errors and log lines, which the
suite's masking must catch before anything is printed or written."""
import logging

from behave import then


@then("the self-check fails, quoting every secret it holds")
def fails_quoting_secrets(context):
    held = context.state.audit.secrets_handled()
    logging.getLogger("selfcheck").error("careless log line: %s", " ".join(held))
    raise AssertionError("careless failure message: " + " | ".join(f"{kind}={value}" for value, kind in held.items()))


@then('the self-check breaks, quoting the secret of the key "{key}"')
def breaks_quoting_key(context, key):
    state = context.state
    raise RuntimeError(f"careless error: the key {state.world.key(key).secret} signed with "
                       f"{state.keys.admin_secret}")
