"""Health probes and metrics."""
from behave import given, then, when
from prometheus_client.parser import text_string_to_metric_families

from support.client.assertions import expect_equal, expect_status, expect_true
from support.harness.waits import wait_until

LIVENESS = "/healthz"


def _samples(exchange) -> list:
    expect_status(exchange, 200, "reading the metrics")
    return [s for family in text_string_to_metric_families(exchange.text) for s in family.samples]


def _liveness_ok_count(samples) -> float:
    return sum(s.value for s in samples if s.name == "gateway_http_requests_total"
               and s.labels.get("route") == LIVENESS and s.labels.get("status") == "200")


@when("an operator asks whether the gateway is alive")
def ask_alive(context):
    state = context.state
    state.world.last.answer = state.api.get(LIVENESS)


@when("an operator asks whether the gateway is ready")
def ask_ready(context):
    state = context.state
    state.world.last.answer = state.api.get("/readyz")


@then("the gateway answers that it is alive")
def answers_alive(context):
    answer = context.state.world.answer()
    expect_status(answer, 200, "the liveness probe")
    expect_equal(answer.json().get("status"), "ok", "the liveness status", answer)


# What the readiness checks must cover: a check whose name holds the word, for each thing ready depends on.
READINESS_CHECKS = {"database": "database", "configuration": "config"}


@then("the gateway answers that it is ready, its database and configuration checks passing")
def answers_ready(context):
    answer = context.state.world.answer()
    expect_status(answer, 200, "the readiness probe")
    body = answer.json()
    expect_equal(body.get("status"), "ready", "the readiness status", answer)
    checks = body.get("checks") or {}
    failing = {name: state for name, state in checks.items() if state != "ok"}
    expect_true(not failing, f"Expected every readiness check to pass, but these did not: {failing}", answer)
    missing = [what for what, word in READINESS_CHECKS.items() if not any(word in name for name in checks)]
    expect_true(not missing, f"Expected readiness checks of the {' and the '.join(READINESS_CHECKS)}, but there "
                f"is none of the {' and the '.join(missing)} among {sorted(checks)}", answer)


@given("an operator has read the gateway's metrics")
def read_metrics_before(context):
    state = context.state
    state.world.metrics.before = _samples(state.scrape_metrics())


@given("an operator has then asked whether the gateway is alive")
def has_asked_alive(context):
    expect_status(context.state.api.get(LIVENESS), 200, "the liveness probe between the two readings of the metrics")


@when("the operator reads the gateway's metrics again")
def read_metrics_after(context):
    state = context.state
    metrics = state.world.metrics
    metrics.answer = state.scrape_metrics()
    metrics.after = _samples(metrics.answer)


@then("the count of successful liveness answers has grown")
def liveness_count_grew(context):
    metrics = context.state.world.metrics
    before, after = _liveness_ok_count(metrics.before), _liveness_ok_count(metrics.after)
    expect_true(after >= before + 1, f"Expected gateway_http_requests_total{{route={LIVENESS!r},status='200'}} to "
                f"grow by at least 1 after a liveness check, but it went from {before} to {after}", metrics.answer)


@then("the metrics include a latency histogram for the liveness route")
def latency_histogram(context):
    metrics = context.state.world.metrics
    buckets = [s for s in metrics.after if s.name == "gateway_http_request_duration_seconds_bucket"
               and s.labels.get("route") == LIVENESS]
    expect_true(len(buckets) >= 2 and any(s.labels.get("le") == "+Inf" and s.value >= 1 for s in buckets),
                f"Expected latency buckets for {LIVENESS} with at least one observation, but saw "
                f"{[(s.labels.get('le'), s.value) for s in buckets]}", metrics.answer)


@given("the account holds a reservation in each state: {states}")
def reservation_in_each_state(context, states):
    state = context.state
    state.billing.hold_in_each_state(state.world.account(), [s.strip() for s in states.split(",")])


def _reservations_by_state(samples) -> dict[str, float]:
    return {s.labels.get("state"): s.value for s in samples if s.name == "gateway_reservations"}


@then("the metrics count reservations in every state: {states}")
def reservation_states(context, states):
    """Each state counts at least the scenario's own reservation in it (the counts are refreshed every few seconds,
    so they are read until they do)."""
    state = context.state
    expected = [s.strip() for s in states.split(",")]
    wait_until(f"gateway_reservations to count at least the scenario's own reservation in each of {expected}",
               state.scrape_metrics,
               lambda answer: all(_reservations_by_state(_samples(answer)).get(s, 0) >= 1 for s in expected),
               timeout=state.config.poll_timeout,
               describe=lambda answer: f"{_reservations_by_state(_samples(answer))} [request id {answer.request_id}]",
               max_interval=0.05)
