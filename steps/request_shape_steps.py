"""Requests of every shape applications send: what the gateway holds for them, charges for them, and refuses."""
import re

import parse
from behave import given, register_type, then, when

from support.domain.request_shapes import SHAPES
from support.harness import step_types  # noqa: F401  (registers {backend:Backend})


@parse.with_pattern("|".join(re.escape(shape) for shape in SHAPES))
def _shape(text):
    return text


register_type(Shape=_shape)  # only the shapes the suite knows, so "with the idempotency key ..." never matches

FAR_MORE_USAGE = {"prompt_tokens": 1000, "completion_tokens": 1000}  # 3.00 USD at the scenario's price: far past any hold


@given("the {backend:Backend} backend reports far more tokens than the request could use")
def backend_overreports(context, backend):
    context.state.routing.behave(backend, "ok", usage=FAR_MORE_USAGE)


@when('the key "{key}" asks "{model}" for a chat completion with {shape:Shape}')
def key_asks_with_shape(context, key, model, shape):
    state = context.state
    state.world.last.answer = state.shapes.ask(key, model, shape)


@when('the key "{key}" sends {count:d} chat completions of mixed shapes to "{model}" at once')
def mixed_burst(context, key, count, model):
    state = context.state
    batch = state.shapes.mixed_burst(key, model, count)
    state.world.burst = state.at_once(batch, title=f"{count} chat completions of mixed shapes to {model!r}")


@then("the hold placed for the request covered the usage its backend reported")
def hold_covered(context):
    state = context.state
    state.shapes.expect_hold_covered(state.world.answer())


@then('the reservation is marked as an overrun, and the overrun is recorded in the audit log of "{org}"')
def overrun_recorded(context, org):
    state = context.state
    state.shapes.expect_overrun_recorded(org, state.world.answer())


@then("the request is refused as invalid, naming the image part")
def image_refused(context):
    state = context.state
    state.shapes.expect_image_refused(state.world.answer())
