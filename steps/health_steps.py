"""Health probes and metrics."""
from behave import given, then, when
from prometheus_client.parser import text_string_to_metric_families

from support.harness.assertions import expect_equal, expect_status, expect_true

LIVENESS = "/healthz"


def _samples(exchange) -> list:
    expect_status(exchange, 200, "reading the metrics")
    return [s for family in text_string_to_metric_families(exchange.text) for s in family.samples]


def _liveness_ok_count(samples) -> float:
    return sum(s.value for s in samples if s.name == "gateway_http_requests_total"
               and s.labels.get("route") == LIVENESS and s.labels.get("status") == "200")


@when("an operator asks whether the gateway is alive")
def ask_alive(context):
    context.response = context.api.get(LIVENESS)


@when("an operator asks whether the gateway is ready")
def ask_ready(context):
    context.response = context.api.get("/readyz")


@then("the gateway answers that it is alive")
def answers_alive(context):
    expect_status(context.response, 200, "the liveness probe")
    expect_equal(context.response.json().get("status"), "ok", "the liveness status", context.response)


@then("the gateway answers that it is ready, with every check passing")
def answers_ready(context):
    expect_status(context.response, 200, "the readiness probe")
    body = context.response.json()
    expect_equal(body.get("status"), "ready", "the readiness status", context.response)
    failing = {name: state for name, state in (body.get("checks") or {}).items() if state != "ok"}
    expect_true(bool(body.get("checks")) and not failing,
                f"Expected every readiness check to pass, but these did not: {failing or 'no checks reported'}",
                context.response)


@given("an operator has read the gateway's metrics")
def read_metrics_before(context):
    context.metrics_before = _samples(context.api.get("/metrics"))


@when("the operator reads the gateway's metrics again")
def read_metrics_after(context):
    context.metrics_exchange = context.api.get("/metrics")
    context.metrics_after = _samples(context.metrics_exchange)


@then("the count of liveness answers with status 200 has grown")
def liveness_count_grew(context):
    before, after = _liveness_ok_count(context.metrics_before), _liveness_ok_count(context.metrics_after)
    expect_true(after >= before + 1, f"Expected gateway_http_requests_total{{route={LIVENESS!r},status='200'}} to "
                f"grow by at least 1 after a liveness check, but it went from {before} to {after}",
                context.metrics_exchange)


@then("the metrics include a latency histogram for the liveness route")
def latency_histogram(context):
    buckets = [s for s in context.metrics_after if s.name == "gateway_http_request_duration_seconds_bucket"
               and s.labels.get("route") == LIVENESS]
    expect_true(len(buckets) >= 2 and any(s.labels.get("le") == "+Inf" and s.value >= 1 for s in buckets),
                f"Expected latency buckets for {LIVENESS} with at least one observation, but saw "
                f"{[(s.labels.get('le'), s.value) for s in buckets]}", context.metrics_exchange)


@then("the metrics count reservations in every state: {states}")
def reservation_states(context, states):
    expected = {s.strip() for s in states.split(",")}
    seen = {s.labels.get("state") for s in context.metrics_after if s.name == "gateway_reservations"}
    expect_true(expected <= seen, f"Expected gateway_reservations for states {sorted(expected)}, but saw "
                f"{sorted(s for s in seen if s)}", context.metrics_exchange)
