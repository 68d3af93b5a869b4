"""A load run against the gateway's chat path, driven by Locust used as a library, headless.

Locust monkey-patches the standard library with gevent as soon as it is imported, which would change how the
suite's own threads, sockets and database drivers behave. So the suite never imports it: `run_chat_load` writes
a plan, runs `python -m support.stress.load PLAN RESULT` as a child process, and reads the figures back. The run
sends exactly `max_requests` requests from `users` users (it ends when the last is answered, or at the `seconds`
safety bound) and only ever aims at a loopback address.

The child records every request itself (status and latency), so the percentiles are exact rather than
Locust's rounded buckets, and it adds up what every answered completion costs from its `usage`, per org: the
client's side of "spend equals the sum of charges".
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from support.harness.money import cost_micros
from support.harness.world import World

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class LoadRefused(Exception):
    """The run was not started: the message says why (e.g. the gateway is not on a loopback address)."""


@dataclass(frozen=True)
class LoadKey:
    org: str  # the org's business name
    secret: str


def run_chat_load(base_url: str, keys: list[LoadKey], *, model: str, prompt_price_per_1k: int,
                  completion_price_per_1k: int, users: int, seconds: float, max_requests: int,
                  content: str = "Hello, gateway", max_tokens: int = 32,
                  expected_statuses: tuple[int, ...] = (200, 402)) -> dict:
    host = urlsplit(base_url).hostname or ""
    if host not in LOOPBACK:
        raise LoadRefused(f"a load run only aims at a loopback address, and the gateway is at {host!r}")
    if not 1 <= users <= 100 or not 0 < seconds <= 120 or not 1 <= max_requests <= 100_000:
        raise LoadRefused(f"the load run is out of bounds: {users} users, {seconds} s, {max_requests} requests "
                          f"(at most 100 users, 120 s, 100,000 requests)")
    plan = {"base_url": base_url.rstrip("/"), "keys": [k.__dict__ for k in keys], "model": model,
            "prompt_price_per_1k": prompt_price_per_1k, "completion_price_per_1k": completion_price_per_1k,
            "users": users, "seconds": seconds, "max_requests": max_requests, "content": content,
            "max_tokens": max_tokens, "expected_statuses": list(expected_statuses)}
    with tempfile.TemporaryDirectory(prefix="load-") as folder:
        plan_path, result_path, log_path = (Path(folder) / name for name in ("plan.json", "result.json", "locust.log"))
        plan_path.write_text(json.dumps(plan))
        with open(log_path, "wb") as log:
            done = subprocess.run([sys.executable, "-m", "support.stress.load", str(plan_path), str(result_path)],
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=seconds + 90,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
        if done.returncode != 0 or not result_path.exists():
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise AssertionError(f"The Locust load run failed (exit {done.returncode}); its last lines:\n  " +
                                 "\n  ".join(tail))
        return json.loads(result_path.read_text())


class LoadRuns:
    """Load runs of one scenario: its orgs' keys against one of its models; the figures kept as an artifact."""

    def __init__(self, base_url: str, world: World, artifacts_dir: str, run_name: str):
        self.base_url, self.world = base_url, world
        self.folder = Path(artifacts_dir) / "load"
        self.run_name = run_name

    def run(self, model: str, users: int, seconds: float, max_requests: int) -> dict:
        """Every key of the orgs in the load run, sending completions to the model; raises LoadRefused when the
        run may not start."""
        keys = [LoadKey(record.org, record.secret) for record in self.world.keys.values()
                if record.org in self.world.load.budgets]
        declared = self.world.model(model)
        return run_chat_load(self.base_url, keys, model=declared.served_as, prompt_price_per_1k=declared.prices[0],
                             completion_price_per_1k=declared.prices[1], users=users, seconds=seconds,
                             max_requests=max_requests)

    def keep(self, figures: dict) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"chat-load-{self.run_name}.json"
        path.write_text(json.dumps(figures, indent=2))
        return path


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(-(-fraction * len(sorted_values) // 1))))
    return sorted_values[rank - 1]


def _child(plan_path: str, result_path: str) -> None:
    import gevent
    from locust import FastHttpUser, constant, task
    from locust.env import Environment
    from locust.exception import StopUser

    plan = json.loads(Path(plan_path).read_text())
    keys = plan["keys"]
    body = {"model": plan["model"], "messages": [{"role": "user", "content": plan["content"]}],
            "max_tokens": plan["max_tokens"]}
    expected = set(plan["expected_statuses"])
    samples: list[tuple[int, float]] = []  # (status, milliseconds); 0 = no answer
    charged = {k["org"]: 0 for k in keys}
    answered = {k["org"]: 0 for k in keys}
    refused = {k["org"]: 0 for k in keys}
    unexpected: list[str] = []
    assigned = {"next": 0}
    tickets = {"issued": 0}  # requests sent so far: exactly max_requests in all

    def cost(usage: dict) -> int:
        return cost_micros(usage, plan["prompt_price_per_1k"], plan["completion_price_per_1k"])

    class ChatUser(FastHttpUser):
        host = plan["base_url"]
        wait_time = constant(0)
        network_timeout = 30.0
        connection_timeout = 5.0

        def on_start(self):
            self.key = keys[assigned["next"] % len(keys)]  # round robin: every org gets the same share of users
            assigned["next"] += 1

        @task
        def chat(self):
            if tickets["issued"] >= plan["max_requests"]:
                raise StopUser()
            tickets["issued"] += 1
            headers = {"Authorization": f"Bearer {self.key['secret']}"}
            started = time.perf_counter()
            with self.client.post("/v1/chat/completions", json=body, headers=headers, name="chat",
                                  catch_response=True) as response:
                status = response.status_code or 0
                samples.append((status, (time.perf_counter() - started) * 1000))
                if status == 200:
                    try:
                        charged[self.key["org"]] += cost(response.json()["usage"])
                        answered[self.key["org"]] += 1
                    except (ValueError, KeyError, TypeError) as exc:
                        unexpected.append(f"200 without usage: {exc}")
                        response.failure("200 without usage")
                        return
                elif status == 402:
                    refused[self.key["org"]] += 1
                if status in expected:
                    response.success()
                else:
                    if len(unexpected) < 20:
                        unexpected.append(f"{status}: {(response.text or '')[:200]}")
                    response.failure(f"unexpected status {status}")

    # At the end every user finishes the request it is in (the gateway would charge it anyway), so the client's
    # sum of charges covers every completion the gateway answered.
    env = Environment(user_classes=[ChatUser], host=plan["base_url"], stop_timeout=ChatUser.network_timeout + 5)
    runner = env.create_local_runner()
    started = time.perf_counter()
    runner.start(plan["users"], spawn_rate=plan["users"])

    def watch():  # stop once every request has been answered, or at the time limit
        while time.perf_counter() - started < plan["seconds"] and len(samples) < plan["max_requests"]:
            gevent.sleep(0.05)
        runner.quit()

    gevent.spawn(watch)
    runner.greenlet.join()
    elapsed = time.perf_counter() - started
    latencies = sorted(ms for _, ms in samples)
    by_status: dict[str, int] = {}
    for status, _ in samples:
        by_status[str(status or "no answer")] = by_status.get(str(status or "no answer"), 0) + 1
    total = env.stats.total

    def figures(values: list[float]) -> dict:
        return {"p50": _round(percentile(values, 0.50)), "p95": _round(percentile(values, 0.95)),
                "p99": _round(percentile(values, 0.99)), "max": _round(values[-1] if values else None),
                "mean": _round(sum(values) / len(values) if values else None)}

    result = {
        "users": plan["users"], "seconds_limit": plan["seconds"], "max_requests": plan["max_requests"],
        "seconds": round(elapsed, 2), "requests": len(samples),
        "requests_per_second": round(len(samples) / elapsed, 1) if elapsed else None,
        "latency_ms": figures(latencies),
        "latency_ms_answered": figures(sorted(ms for status, ms in samples if status == 200)),
        "by_status": by_status, "unexpected": unexpected,
        "answered_by_org": answered, "refused_by_org": refused, "charged_micros_by_org": charged,
        "locust": {"num_requests": total.num_requests, "num_failures": total.num_failures,
                   "total_rps": round(total.total_rps, 1), "p95_ms": total.get_response_time_percentile(0.95),
                   "version": __import__("locust").__version__},
    }
    Path(result_path).write_text(json.dumps(result, indent=2))


def _round(value):
    return None if value is None else round(value, 1)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
