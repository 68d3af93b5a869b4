"""A model backend's circuit breaker (issue 16): opened by failures in a row, skipped while open, probed once after
its cool-down, closed by an answer. Driven and read through support/domain/backend_circuits.py."""
from behave import given, then, when

from support.client.api import Request
from support.domain.platform_api import chat_body
from support.harness import step_types  # noqa: F401  (registers {backend:Backend})


@given('the model "{model}" routes to a primary and then a secondary backend, the primary given {seconds:g} seconds '
       'to answer, its circuit opening after {failures:d} failures in a row and probed after {cooldown:g} seconds')
def model_with_guarded_primary(context, model, seconds, failures, cooldown):
    context.state.circuits.declare(model, seconds, failures, cooldown)


@given("the {backend:Backend} backend's circuit has opened, the {same:Backend} hanging")
def circuit_opened(context, backend, same):
    state = context.state
    state.circuits.hang(backend)
    failing = state.circuits.failing_requests(next(iter(state.world.keys)))
    answers = state.at_once(failing, title=f"{len(failing)} completions while the {backend} hangs").exchanges
    state.circuits.expect_opened(backend, answers)


@given("the model's {backend:Backend} backend answers again")
def backend_answers_again(context, backend):
    context.state.routing.behave(backend, "ok")


@given("the {backend:Backend} backend's cool-down has passed")
def cooldown_passed(context, backend):
    context.state.circuits.await_state(backend, "half_open")


@when('{count:d} chat completions with the key "{key}" arrive at once')
def completions_at_once(context, count, key):
    state = context.state
    model = state.routing.current()
    state.routing.note_calls_before(model.name)
    batch = [Request("POST", "/v1/chat/completions", token=state.world.key(key).secret,
                     json_body=chat_body(model.served_as)) for _ in range(count)]
    state.world.circuits.answers = state.at_once(batch, title=f"{count} completions after the cool-down").exchanges


@then("it was answered without waiting for the {backend:Backend} backend's time-out")
def without_waiting(context, backend):
    state = context.state
    state.circuits.expect_answered_without_waiting(state.world.answer(), backend)


@then("a platform admin sees the {backend:Backend} backend's circuit {circuit}")
def admin_sees(context, backend, circuit):
    context.state.circuits.expect_state(backend, circuit.replace(" ", "_"))


@then("the audit log holds the {backend:Backend} backend's circuit changes, each once: {changes}")
def audited_changes(context, backend, changes):
    context.state.circuits.expect_transitions(backend, [c.strip() for c in changes.split(",")])


@then("each is answered, and the {backend:Backend} backend received exactly one of them")
def one_probe(context, backend):
    context.state.circuits.expect_one_probe(backend)
