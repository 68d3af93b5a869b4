"""The deployment's metrics as an operator's Prometheus sees them: every replica scraped, the figures put together.

Behind a load balancer one `/metrics` answer is one replica's (the gateway sums only the processes of one replica).
So, when the stack names its replicas' own addresses, each is scraped, and their samples are put together as a
`sum by (labels)` would: counters and histograms add up. A gauge is a state: the contract's (reservations by state)
is read from the one database by every replica, each refreshing it on its own beat, so one replica's value is kept,
the first's, the same in every reading (a reading that mixed replicas could mix a fresh count with a stale one;
gauges of one process, such as the leader, are that replica's). The answer is the
first replica's exchange with the combined exposition as its text, so steps parse it as any /metrics answer and
failure messages quote its request id; every scrape is recorded as evidence."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from support.client.api import ApiClient, Exchange

SUMMED = ("counter", "histogram", "summary")


def scrape(api: ApiClient, replica_urls: tuple[str, ...] = ()) -> Exchange:
    """GET /metrics from the deployment: through the API's address, or from each replica when they are given."""
    if not replica_urls:
        return api.get("/metrics")
    answers = []
    for url in replica_urls:
        exchange = api.prepare("GET", "/metrics")
        exchange.url = url.rstrip("/") + "/metrics"
        try:
            answers.append(api.send(exchange))
        finally:
            api.record(exchange)
    first = answers[0]
    if all(a.status == 200 for a in answers):
        first.text = combined(a.text for a in answers)
    return first


def combined(texts) -> str:
    """Prometheus text expositions put together, sample by sample (see the module's docstring)."""
    kinds: dict[str, str] = {}
    helps: dict[str, str] = {}
    values: dict[tuple, float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            kinds[family.name], helps[family.name] = family.type, family.documentation
            for sample in family.samples:
                key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                if key not in values:
                    values[key] = sample.value
                elif sample.name.endswith("_created"):  # when the first replica began counting
                    values[key] = min(values[key], sample.value)
                elif family.type in SUMMED:
                    values[key] += sample.value
    lines = []
    for name, kind in kinds.items():
        lines += [f"# HELP {name} {helps[name]}", f"# TYPE {name} {kind}"]
        for (family, sample, labels), value in values.items():
            if family == name:
                shown = ",".join(f'{k}="{_escaped(v)}"' for k, v in labels)
                lines.append(f"{sample}{{{shown}}} {value!r}" if shown else f"{sample} {value!r}")
    return "\n".join(lines) + "\n"


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
