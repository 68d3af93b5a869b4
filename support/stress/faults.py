"""Faults the resilience features inject, and what they observe while a fault lasts.

* The gateway process: killed with SIGKILL and started again (same database, same port), through the stack.
* The database: made unavailable and given back, by the stack (support.stacks.outages says how).
* Requests left in flight, answered or cut off when the gateway dies (requests sent at once while a fault lasts
  go through support.stress.burst).
* A corpus of malformed and oversized requests, sent in a burst while a health probe keeps asking.

Only the embedded (local) stack owns its processes and its database; on other stacks these faults are not
available and the scenarios that need them are skipped with the reason.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import requests

from support.client import evidence
from support.client.api import ApiClient
from support.domain.platform_api import chat_body
from support.domain.model_routes import ModelRoutes
from support.stacks.base import Stack
from support.stacks.outages import FaultUnavailable
from support.stacks.replicas import wait_every_process


# ---- the stack's processes and database ----------------------------------------------------------------------------

def require(stack, capability: str):
    """The stack's method for a fault, or FaultUnavailable saying which stack would support it."""
    method = getattr(stack, capability, None)
    if method is None:
        raise FaultUnavailable(f"the {getattr(stack, 'name', 'current')} stack cannot {capability.replace('_', ' ')}: "
                               f"this fault needs the embedded stack (-D stack=local), which owns the gateway "
                               f"process and its database")
    return method


# ---- requests left in flight ---------------------------------------------------------------------------------------

@dataclass
class InFlight:
    """Requests sent on background threads; each ends with a status or with the transport error that cut it off."""
    request_ids: list[str]
    futures: list[Future]
    pool: ThreadPoolExecutor

    def outcomes(self, timeout: float = 30) -> list[str]:
        """'200', '502', ... or 'no answer (ConnectionError)' per request, in sending order."""
        seen = []
        for future in self.futures:
            try:
                seen.append(str(future.result(timeout=timeout)))
            except requests.RequestException as exc:
                seen.append(f"no answer ({type(exc).__name__})")
        self.pool.shutdown(wait=False)
        return seen


def send_in_flight(base_url: str, path: str, token: str, body: dict, count: int, request_id_prefix: str,
                   timeout: float = 120) -> InFlight:
    pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="in-flight")
    request_ids = [f"{request_id_prefix}.inflight{i:02d}" for i in range(count)]

    def send(request_id: str) -> int:
        response = requests.post(base_url + path, json=body, timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id})
        return response.status_code

    return InFlight(request_ids, [pool.submit(send, rid) for rid in request_ids], pool)


# ---- malformed and oversized requests ------------------------------------------------------------------------------

TEN_MB = 10 * 1024 * 1024


@dataclass(frozen=True)
class Malformed:
    name: str  # what is wrong, in a few words
    # Given a real model's name. Bytes are built once per burst and sent to every target; a stream anew each time.
    body: Callable[[str], bytes | Iterator[bytes]]
    content_type: str = "application/json"
    oversized: bool = False


def _chunks(total: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        size = min(chunk, total - sent)
        yield b"x" * size
        sent += size


def _deep(depth: int) -> bytes:
    return b'{"model": "m", "messages": ' + b"[" * depth + b"]" * depth + b"}"


def _chat(model: str, **fields) -> bytes:
    """A chat request for a real model, with some fields made wrong."""
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


CORPUS: tuple[Malformed, ...] = (
    Malformed("empty body", lambda m: b""),
    Malformed("truncated JSON", lambda m: b'{"model": "m", "messages": [{"role": "user", "content": "hi"'),
    Malformed("not JSON at all", lambda m: b"hello, gateway"),
    Malformed("a JSON array, not an object", lambda m: b"[1, 2, 3]"),
    Malformed("a JSON string, not an object", lambda m: b'"just a string"'),
    Malformed("invalid UTF-8", lambda m: b'{"model": "' + bytes([0xFF, 0xFE, 0xFD]) + b'", "messages": []}'),
    Malformed("wrong types everywhere", lambda m: json.dumps({
        "model": 42, "messages": "hi", "max_tokens": "ten", "email": [], "password": {}, "slug": 7, "name": None,
        "owner_email": 1.5, "account_id": True, "amount_micros": "100", "ttl_seconds": [], "reason": {}}).encode()),
    Malformed("negative and fractional amounts", lambda m: _chat(
        m, max_tokens=-1, amount_micros=-5, ttl_seconds=-1, account_id="x", reason="r", budget_micros=0.5)),
    Malformed("a real model asked for zero tokens", lambda m: _chat(m, max_tokens=0)),
    Malformed("a real model with no messages", lambda m: _chat(m, messages=[])),
    Malformed("a real model with a message without a role", lambda m: _chat(m, messages=[{"content": "hi"}])),
    Malformed("a number with 5000 digits", lambda m: (b'{"model": "m", "max_tokens": ' + b"9" * 5000 +
                                                      b', "amount_micros": ' + b"9" * 5000 + b"}")),
    Malformed("a number beyond floating point", lambda m: b'{"max_tokens": 1e999, "amount_micros": 1e999}'),
    Malformed("NaN and Infinity", lambda m: b'{"max_tokens": NaN, "amount_micros": Infinity}'),
    Malformed("NUL characters in names", lambda m: (
        b'{"model": "m\\u0000x", "messages": [{"role": "user", "content": "hi"}], "email": "a\\u0000@b.test", '
        b'"password": "pw", "slug": "s\\u0000", "name": "\\u0000", "owner_email": "o\\u0000@b.test", '
        b'"account_id": "\\u0000", "amount_micros": 1, "reason": "r\\u0000"}')),
    Malformed("a lone surrogate in a real model's message", lambda m: (
        b'{"model": ' + json.dumps(m).encode() + b', "messages": [{"role": "user", "content": "\\ud800"}], '
        b'"email": "\\ud800@b.test", "password": "\\ud800", "slug": "\\ud800", "name": "\\ud800", '
        b'"owner_email": "\\ud800@b.test", "account_id": "\\ud800", "amount_micros": 1, "reason": "\\ud800"}')),
    Malformed("nesting 100,000 levels deep", lambda m: _deep(100_000)),
    Malformed("nesting 900 levels deep", lambda m: _deep(900)),
    Malformed("50,000 keys in one object", lambda m: json.dumps({f"k{i}": i for i in range(50_000)}).encode()),
    Malformed("a form post, not JSON", lambda m: b"model=m&messages=hi", "application/x-www-form-urlencoded"),
    Malformed("10 MB body with its length declared", lambda m: b"x" * TEN_MB, oversized=True),
    Malformed("10 MB body streamed without a length", lambda m: _chunks(TEN_MB), oversized=True),
)


@dataclass
class Outcome:
    target: str
    case: str
    status: int | None
    elapsed_ms: float
    request_id: str | None = None
    error: str | None = None
    code: str | None = None  # the error's machine word, when the body says one
    message: str | None = None
    oversized: bool = False

    def as_row(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Probe:
    at_s: float
    status: int | None
    elapsed_ms: float
    error: str | None = None


@dataclass
class MalformedBurst:
    outcomes: list[Outcome] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        by_status: dict[str, int] = {}
        for o in self.outcomes:
            key = str(o.status) if o.status is not None else f"no answer ({o.error})"
            by_status[key] = by_status.get(key, 0) + 1
        answered = [p.elapsed_ms for p in self.probes if p.status is not None]
        return {"requests": len(self.outcomes), "seconds": round(self.seconds, 2), "by_status": by_status,
                "health_probes": len(self.probes), "health_probe_max_ms": round(max(answered), 1) if answered else None,
                "health_probe_failures": [p.__dict__ for p in self.probes if p.status != 200]}


def _error_fields(response: requests.Response) -> tuple[str | None, str | None]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200] or None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("code"), body["error"].get("message")
    if isinstance(body, dict):
        return body.get("code"), body.get("detail")
    return None, None


def send_malformed(base_url: str, targets: dict[str, tuple[str, str, dict]], model: str, *, rounds: int = 1,
                   workers: int = 8, probe_every: float = 0.1, probe_timeout: float = 3.0, request_timeout: float = 60,
                   request_id_prefix: str = "burst") -> MalformedBurst:
    """Send every corpus case (about `model`, a real one) to every target (name -> (method, path, headers))
    `rounds` times from `workers` threads, while a health probe asks /healthz every `probe_every` seconds.
    Ends with one more probe."""
    report = MalformedBurst()
    done = threading.Event()
    # Built once, not once per target: the 50,000-key document alone costs ~30 ms of the suite's CPU each time.
    built = {case.name: body for case in CORPUS if isinstance(body := case.body(model), bytes)}
    started = time.perf_counter()
    sequence = iter(range(10 ** 9))
    lock = threading.Lock()

    def next_id(tag: str) -> str:
        with lock:
            return f"{request_id_prefix}.{tag}{next(sequence):04d}"

    def probe_once() -> None:
        t0 = time.perf_counter()
        try:
            status = requests.get(f"{base_url}/healthz", timeout=probe_timeout,
                                  headers={"X-Request-ID": next_id("probe")}).status_code
            report.probes.append(Probe(round(t0 - started, 2), status, (time.perf_counter() - t0) * 1000))
        except requests.RequestException as exc:
            report.probes.append(Probe(round(t0 - started, 2), None, (time.perf_counter() - t0) * 1000,
                                       type(exc).__name__))

    def prober() -> None:
        while not done.wait(probe_every):
            probe_once()

    def send(target: str, case: Malformed) -> Outcome:
        method, path, headers = targets[target]
        request_id = next_id("bad")
        sent = {**headers, "Content-Type": case.content_type, "X-Request-ID": request_id}
        t0 = time.perf_counter()
        try:
            with requests.Session() as session:
                body = built[case.name] if case.name in built else case.body(model)
                response = session.request(method, base_url + path, data=body, headers=sent, timeout=request_timeout)
            code, message = _error_fields(response)
            return Outcome(target, case.name, response.status_code, (time.perf_counter() - t0) * 1000, request_id,
                           code=code, message=(message or "")[:200], oversized=case.oversized)
        except requests.RequestException as exc:
            return Outcome(target, case.name, None, (time.perf_counter() - t0) * 1000, request_id,
                           error=type(exc).__name__, oversized=case.oversized)

    probe_thread = threading.Thread(target=prober, name="health-probe", daemon=True)
    probe_thread.start()
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="burst") as pool:
            futures = [pool.submit(send, target, case) for _ in range(rounds) for target in targets
                       for case in CORPUS]
            report.outcomes = [f.result() for f in futures]
    finally:
        done.set()
        probe_thread.join(timeout=probe_timeout + 1)
    probe_once()
    report.seconds = time.perf_counter() - started
    return report


class Faults:
    """The faults one scenario injects into its stack, and the requests it sends while they last. A fault the
    stack cannot take raises FaultUnavailable (the step skips the scenario with its reason)."""

    def __init__(self, stack: Stack, routing: ModelRoutes, add_cleanup: Callable):
        self.stack, self.routing, self.add_cleanup = stack, routing, add_cleanup
        self.api: ApiClient = routing.api
        self.platform, self.world = routing.platform, routing.world

    def require(self, capability: str) -> Callable:
        return require(self.stack, capability)

    def gateway_pid(self) -> int | None:
        return self.stack.gateway_pid()

    def take_database_away(self) -> None:
        """The database becomes unavailable until the scenario gives it back (or ends)."""
        stop = self.require("stop_database")
        self.world.gateway_pid = self.stack.gateway_pid()
        # Cleanups run last-added first: the database comes back, then the next scenario gets the stack only once
        # every gateway process has answered from the database again.
        self.add_cleanup(self.wait_until_every_process_reads_the_database)
        self.add_cleanup(self.stack.start_database)  # no matter how the scenario ends
        evidence.attach_text("fault injected", f"The database was made unavailable: {stop()}.")

    def give_database_back(self) -> None:
        self.stack.start_database()

    def wait_until_every_process_reads_the_database(self, timeout: float = 20) -> None:
        """Readiness asked on a new connection each time (so each may land on another worker process) until every
        gateway process has answered ready since the database came back, none failing since (X-Gateway-Process
        names who answered): a process that still held a connection the outage ended fails once and drops it, and
        that failure belongs to the outage's scenario, not to the next one."""
        processes = self.stack.config.gateway_processes
        wait_every_process(self.api.base_url, processes, timeout, path="/readyz",
                           awaited=f"each of the {processes} gateway process(es) to answer ready again after the outage")

    def gateway_up_again_if_down(self) -> None:
        """For a scenario that takes the gateway down, as a cleanup: the scenarios after it on this stack need it up,
        however this one ended."""
        if self.stack.gateway_pid() is None:
            self.stack.restart_gateway()

    def kill_and_restart_gateway(self) -> None:
        pid = self.require("kill_gateway")()
        self.stack.restart_gateway()
        evidence.attach_text("fault injected", f"The gateway (pid {pid}) was killed with SIGKILL and started again "
                             f"(pid {self.stack.gateway_pid()}) on the same port and database.")

    def hold_in_flight(self, key: str, count: int) -> InFlight:
        """`count` completions of the model being asked, held up by its primary backend, which stops answering."""
        self.require("kill_gateway")
        self.routing.behave("primary", "hang")
        return send_in_flight(self.api.base_url, "/v1/chat/completions", self.world.key(key).secret,
                              chat_body(self.routing.current().served_as), count, self.api.request_id_prefix)

    def malformed_burst(self) -> MalformedBurst:
        """The corpus of malformed and oversized requests, sent to the gateway's endpoints with valid credentials
        of the scenario's first org, about the scenario's first model (deeper checks than an unknown one)."""
        org = self.world.first_org()
        owner = self.platform.owner_of(org.name)
        key = next(iter(self.world.keys.values()))
        keys = self.platform.keys
        targets = {
            "chat completion (API key)": ("POST", "/v1/chat/completions", _bearer(key.secret)),
            "login (anonymous)": ("POST", "/auth/login", {}),
            "open an org (platform admin)": ("POST", "/admin/orgs", _bearer(keys.admin_token(ttl=600))),
            "mint credit (platform admin)": ("POST", "/admin/billing/mint", _bearer(keys.admin_token(ttl=600))),
            "reserve (service)": ("POST", "/billing/reservations", _bearer(keys.service_token(ttl=600))),
            "issue a key (org owner)": ("POST", f"/orgs/{org.slug}/keys",
                                        _bearer(self.platform.access_token(owner))),
        }
        model = next(iter(self.world.models.values())).served_as
        burst = send_malformed(self.api.base_url, targets, model, request_id_prefix=self.api.request_id_prefix)
        evidence.attach_json("burst summary", burst.summary())
        evidence.attach_json("burst outcomes", [o.as_row() for o in burst.outcomes])
        return burst


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}
