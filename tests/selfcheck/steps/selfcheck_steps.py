"""Careless steps, on purpose: they quote raw secrets in failure messages, errors and log lines, which the
suite's masking must catch before anything is printed or written."""
import logging

from behave import then

from support.domain.audit_log import secrets_handled


@then("the self-check fails, quoting every secret it holds")
def fails_quoting_secrets(context):
    held = secrets_handled(context.api, context.keys, context.world)
    logging.getLogger("selfcheck").error("careless log line: %s", " ".join(held))
    raise AssertionError("careless failure message: " + " | ".join(f"{kind}={value}" for value, kind in held.items()))


@then('the self-check breaks, quoting the secret of the key "{key}"')
def breaks_quoting_key(context, key):
    raise RuntimeError(f"careless error: the key {context.world.key(key).secret} signed with "
                       f"{context.keys.admin_secret}")
