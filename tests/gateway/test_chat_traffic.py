"""The chat path under real client traffic, end to end: the embedded stack (gateway and model stub as child
processes) on SQLite, and on PostgreSQL when a server answers at $TEST_POSTGRES_URL (the chat store differs).

Holds bound every request shape and charges are what the backend reports (overruns charged in full, marked and
audited); streams pass through as they are generated, fall back only before their first event, end with an error
event when the backend fails mid-stream, and stop the backend when the client goes away; Idempotency-Key retries
replay the first answer."""
from __future__ import annotations

import json
import math
import os
import secrets
import threading
import time

import asyncio

import httpx
import pytest
from aiohttp import web
from sqlalchemy import MetaData, Table, create_engine, text, update

from gateway.services import token_bounds as bounds
from support.client.api import ApiClient
from support.domain.platform_api import Platform
from support.harness.config import load
from support.harness.namespace import Namespace
from support.harness.world import World
from support.stacks import make_stack
from support.tokens.signing_keys import KeyMaterial

PG_SERVER = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PROMPT_PRICE, COMPLETION_PRICE = 1_000_000, 2_000_000  # micro-USD per 1k tokens: 1000 and 2000 per token
CONTENT = "Hello, gateway"
REPLY = "Echo: Hello, gateway"  # the stub's answer: 5 tokens, 20 bytes
PROMPT_BOUND = bounds.REPLY_OVERHEAD_TOKENS + bounds.MESSAGE_OVERHEAD_TOKENS + len(CONTENT)
CREDIT = 50_000_000


def cost(prompt: int, completion: int) -> int:
    return math.ceil((prompt * PROMPT_PRICE + completion * COMPLETION_PRICE) / 1000)


def postgres_answers() -> bool:
    try:
        engine = create_engine(PG_SERVER, connect_args={"connect_timeout": 2})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


class Traffic:
    """One org with credit and an API key, models routed to stub namespaces, and reads of the gateway's books."""

    def __init__(self, endpoints):
        self.base, self.stub = endpoints.base_url, endpoints.stub_url
        self.engine = create_engine(endpoints.database_url)
        run = secrets.token_hex(3)
        self.ns = Namespace("ct" + run, "chat-traffic")
        self.api = ApiClient(self.base, request_id_prefix=f"t.chat.{run}", trace_id=secrets.token_hex(16),
                             timeout=20)
        self.platform = Platform(self.api, KeyMaterial(endpoints.keys_dir), self.ns, World())
        self.platform.org_with_owner("Acme", "Olive")
        self.platform.mint("Acme", CREDIT)
        self.platform.issue_key("Olive", "Acme", "ci")
        self.key = self.platform.world.key("ci").secret
        self.account = self.platform.world.org("Acme").account_id
        self.http = httpx.Client(base_url=self.base, timeout=20)

    def model(self, *namespaces: str, **columns) -> str:
        """A model whose backends are the stub's namespaces, in route order (each reset to answer normally), or
        full URLs of backends of the test's own."""
        name = self.ns.name(f"m-{secrets.token_hex(3)}")
        backends = []
        for ns in namespaces:
            scoped = self.ns.name(ns)
            if not ns.startswith("http"):
                httpx.delete(f"{self.stub}/_stub/{scoped}")
            url = ns if ns.startswith("http") else f"{self.stub}/ns/{scoped}/v1/chat/completions"
            backends.append({"name": ns.rsplit("/", 1)[-1], "url": url, "timeout_seconds": 10})
        with self.engine.begin() as conn:
            conn.execute(text("INSERT INTO models (name, prompt_price_per_1k_micros, completion_price_per_1k_micros, "
                              "backends, default_max_tokens, created_at) VALUES (:n, :p, :c, :b, 64, :now)"),
                         {"n": name, "p": PROMPT_PRICE, "c": COMPLETION_PRICE, "b": json.dumps(backends),
                          "now": time.strftime("%Y-%m-%d %H:%M:%S")})
            if columns:
                models = self._table("models")
                conn.execute(update(models).where(models.c.name == name).values(**columns))
        return name

    def _table(self, name: str):
        return Table(name, MetaData(), autoload_with=self.engine)

    def behave(self, ns: str, **behaviour) -> None:
        answer = httpx.put(f"{self.stub}/_stub/{self.ns.name(ns)}/behaviour", json=behaviour)
        assert answer.status_code == 200, answer.text

    def calls(self, ns: str) -> list[dict]:
        return httpx.get(f"{self.stub}/_stub/{self.ns.name(ns)}/calls").json()["calls"]

    def headers(self, request_id: str | None = None, **extra) -> dict:
        return {"Authorization": f"Bearer {self.key}", "X-Request-ID": request_id or f"t.chat.{secrets.token_hex(6)}",
                **extra}

    def ask(self, model: str, content: str = CONTENT, headers: dict | None = None, **body) -> httpx.Response:
        return self.http.post("/v1/chat/completions", headers=headers or self.headers(),
                              json={"model": model, "messages": [{"role": "user", "content": content}], **body})

    def stream(self, model: str, headers: dict | None = None, **body):
        return self.http.stream("POST", "/v1/chat/completions", headers=headers or self.headers(),
                                json={"model": model, "messages": [{"role": "user", "content": CONTENT}],
                                      "stream": True, **body})

    def reservation(self, request_id: str):
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT * FROM reservations WHERE request_id = :r"), {"r": request_id}).first()

    def settled(self, request_id: str, deadline: float = 10):
        """The request's reservation once it left `pending` (polled: a stream settles after its answer ends)."""
        until, row = time.monotonic() + deadline, None
        while time.monotonic() < until:
            row = self.reservation(request_id)
            if row is not None and row.status != "pending":
                return row
            time.sleep(0.05)
        raise AssertionError(f"the reservation of request {request_id} was not settled within {deadline} s; "
                             f"last seen: {row}")

    def events(self, request_id: str) -> list:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT outcome, reason, details FROM audit_events WHERE request_id = :r "
                                     "AND action = 'chat.completion'"), {"r": request_id}).all()

    def balances(self) -> tuple[int, int, int]:
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT available_micros, held_micros, spent_micros FROM accounts WHERE id = :a"),
                               {"a": self.account}).one()
        return tuple(int(v) for v in row)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def traffic(request):
    if request.param == "postgresql" and not postgres_answers():
        pytest.skip(f"no PostgreSQL server at {PG_SERVER}")
    stack = make_stack(load({} if request.param == "sqlite" else {"database_url": PG_SERVER}, environ={}))
    endpoints = stack.up()
    try:
        yield Traffic(endpoints)
    finally:
        stack.down()


class OwnBackend:
    """Backends of the test's own, for answers the model stub does not give: POST /<name> answers ANSWERS[name]."""
    ANSWERS = {
        "no-usage": {"id": "c1", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "é" * 10}, "finish_reason": "stop"}]},
        "not-a-stream": {"id": "c2", "object": "chat.completion", "choices": [], "usage": {
            "prompt_tokens": 1, "completion_tokens": 1}},
    }

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.calls: list[str] = []
        started = threading.Event()
        threading.Thread(target=self._serve, args=(started,), daemon=True).start()
        started.wait(10)

    def _serve(self, started: threading.Event) -> None:
        async def answer(request: web.Request) -> web.Response:
            self.calls.append(request.match_info["name"])
            return web.json_response(self.ANSWERS[request.match_info["name"]])

        async def start():
            app = web.Application()
            app.router.add_post("/{name}", answer)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
            started.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@pytest.fixture(scope="module")
def own_backend():
    return OwnBackend()


def sse(lines) -> list:
    """The data of each event: parsed JSON, or the string '[DONE]'."""
    out = []
    for line in lines:
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def details(event) -> dict:
    value = event.details
    return json.loads(value) if isinstance(value, str) else value


# ---- holds and charges -------------------------------------------------------------------------------------------

def test_a_non_ascii_prompt_is_charged_all_the_backend_reports(traffic):
    model = traffic.model("primary")
    cjk = "漢" * 400  # the stub counts 500 prompt tokens
    headers = traffic.headers()
    answer = traffic.ask(model, cjk, headers=headers, max_tokens=5)
    assert answer.status_code == 200, answer.text
    usage = answer.json()["usage"]
    assert usage["prompt_tokens"] == 500
    reservation = traffic.settled(headers["X-Request-ID"])
    assert reservation.actual_micros == cost(usage["prompt_tokens"], usage["completion_tokens"])
    assert reservation.amount_micros == cost(3 + 4 + 1200, 5) and reservation.overrun_micros is None


def test_n_choices_are_held_times_n_and_charged_as_reported(traffic):
    model = traffic.model("primary")
    headers = traffic.headers()
    answer = traffic.ask(model, headers=headers, n=3, max_completion_tokens=10)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["choices"]) == 3
    usage = answer.json()["usage"]
    assert usage["completion_tokens"] == 15
    reservation = traffic.settled(headers["X-Request-ID"])
    assert reservation.amount_micros == cost(PROMPT_BOUND, 3 * 10)
    assert reservation.actual_micros == cost(usage["prompt_tokens"], 15)
    assert traffic.calls("primary")[-1]["body"]["max_completion_tokens"] == 10


def test_an_image_part_is_refused_naming_it_unless_the_model_prices_it(traffic):
    parts = [{"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]
    text_only = traffic.model("primary")
    refused = traffic.ask(text_only, parts)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == "messages[0].content[1]"
    assert traffic.calls("primary") == []
    vision = traffic.model("vision", content_part_tokens={"image_url": 85})
    headers = traffic.headers()
    answer = traffic.ask(vision, parts, headers=headers, max_tokens=8)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["prompt_tokens"] == 3 + 85  # "what is it?": 3 tokens, the image 85
    reservation = traffic.settled(headers["X-Request-ID"])
    assert reservation.amount_micros == cost(3 + 4 + 11 + 85, 8) >= reservation.actual_micros


def test_a_backend_reporting_more_than_the_hold_is_charged_in_full_marked_and_audited(traffic):
    model = traffic.model("primary")
    traffic.behave("primary", usage={"prompt_tokens": 40_000, "completion_tokens": 10})
    before = traffic.balances()
    headers = traffic.headers()
    answer = traffic.ask(model, headers=headers, max_tokens=5)
    assert answer.status_code == 200, answer.text
    reservation = traffic.settled(headers["X-Request-ID"])
    charged = cost(40_000, 10)
    assert (reservation.status, reservation.actual_micros) == ("finalized", charged)
    assert reservation.overrun_micros == charged - reservation.amount_micros > 0
    after = traffic.balances()
    assert (before[0] - after[0], after[2] - before[2]) == (charged, charged)
    [event] = traffic.events(headers["X-Request-ID"])
    assert details(event)["overrun_micros"] == reservation.overrun_micros and "overrun" in event.reason
    assert 'gateway_chat_overruns_total{backend="primary"}' in traffic.http.get("/metrics").text


def test_an_answer_without_usage_is_charged_by_the_bytes_it_generated(traffic, own_backend):
    model = traffic.model(own_backend.url("no-usage"))
    headers = traffic.headers()
    answer = traffic.ask(model, headers=headers, max_tokens=32)
    assert answer.status_code == 200, answer.text
    reservation = traffic.settled(headers["X-Request-ID"])
    assert reservation.actual_micros == cost(PROMPT_BOUND, 20)  # ten "é": 20 bytes, within the 32 asked for
    [event] = traffic.events(headers["X-Request-ID"])
    assert details(event)["usage"] == {"prompt_tokens": PROMPT_BOUND, "completion_tokens": 20, "reported": False}


# ---- streaming ---------------------------------------------------------------------------------------------------

def test_a_stream_passes_chunks_on_before_the_backend_has_finished(traffic):
    model = traffic.model("primary")
    traffic.behave("primary", chunk_delay_ms=150)
    headers = traffic.headers()
    with traffic.stream(model, headers=headers, max_tokens=16) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        still_going = traffic.calls("primary")[-1]["stream"]
        rest = list(lines)
    assert still_going["finished"] is False, still_going
    chunks = sse([first] + rest)
    assert chunks[-1] == "[DONE]"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c["choices"]) == REPLY
    assert all(c.get("usage") is None for c in chunks[:-1]), "the client did not ask for the usage chunk"
    assert traffic.calls("primary")[-1]["body"]["stream_options"] == {"include_usage": True}
    reservation = traffic.settled(headers["X-Request-ID"])
    assert reservation.actual_micros == cost(math.ceil(len(CONTENT) / 4), 5)  # the backend's usage, exactly
    [event] = traffic.events(headers["X-Request-ID"])
    assert details(event)["stream"]["outcome"] == "completed" and details(event)["usage"]["reported"] is True


def test_a_stream_with_include_usage_gets_the_usage_chunk(traffic):
    model = traffic.model("primary")
    with traffic.stream(model, max_tokens=16, stream_options={"include_usage": True}) as response:
        chunks = sse(response.iter_lines())
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"]["completion_tokens"] == 5
    assert chunks[-1] == "[DONE]"


def test_a_stream_without_usage_is_charged_by_the_bytes_it_generated(traffic):
    model = traffic.model("primary")
    traffic.behave("primary", stream_usage="never")
    headers = traffic.headers()
    with traffic.stream(model, headers=headers, max_tokens=32) as response:  # 20 bytes generated, within 32
        chunks = sse(response.iter_lines())
    assert chunks[-1] == "[DONE]"
    reservation = traffic.settled(headers["X-Request-ID"])
    assert reservation.actual_micros == cost(PROMPT_BOUND, len(REPLY))
    [event] = traffic.events(headers["X-Request-ID"])
    assert details(event)["usage"] == {"prompt_tokens": PROMPT_BOUND, "completion_tokens": len(REPLY),
                                       "reported": False}


def test_a_stream_falls_back_before_its_first_event_only(traffic):
    model = traffic.model("primary", "fallback")
    traffic.behave("primary", mode="error", status=503)
    with traffic.stream(model, max_tokens=16) as response:
        assert response.headers["x-gateway-backend"] == "fallback"
        assert sse(response.iter_lines())[-1] == "[DONE]"
    traffic.behave("primary", stream_fault={"after_chunks": 2, "kind": "drop"})
    headers = traffic.headers()
    with traffic.stream(model, headers=headers, max_tokens=16) as response:
        chunks = sse(response.iter_lines())
    assert len(traffic.calls("fallback")) == 1, "no fallback once the stream has begun"
    assert chunks[-1]["error"]["type"] == "server_error" and "primary" in chunks[-1]["error"]["message"]


def test_a_streamed_request_answered_without_an_event_stream_falls_back(traffic, own_backend):
    model = traffic.model(own_backend.url("not-a-stream"), "fallback")
    headers = traffic.headers()
    with traffic.stream(model, headers=headers, max_tokens=16) as response:
        assert response.headers["x-gateway-backend"] == "fallback"
        assert sse(response.iter_lines())[-1] == "[DONE]"
    traffic.settled(headers["X-Request-ID"])  # its audit event is written with the settlement, as the stream ends
    [event] = traffic.events(headers["X-Request-ID"])
    first = details(event)["attempts"][0]
    assert (first["outcome"], first["detail"]) == ("server_error", "a streamed request was answered without an "
                                                                   "event stream")


def test_a_backend_failing_mid_stream_ends_it_with_an_error_event_and_charges_what_was_delivered(traffic):
    model = traffic.model("primary")
    traffic.behave("primary", stream_fault={"after_chunks": 2, "kind": "error"})
    headers = traffic.headers()
    with traffic.stream(model, headers=headers, max_tokens=16) as response:
        chunks = sse(response.iter_lines())
    assert "[DONE]" not in chunks
    assert set(chunks[-1]) == {"error"} and chunks[-1]["error"]["code"] == "backend_stream_failed"
    delivered = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c.get("choices"))
    assert delivered == REPLY[:8]
    reservation = traffic.settled(headers["X-Request-ID"])
    assert reservation.actual_micros == cost(PROMPT_BOUND, 8)
    [event] = traffic.events(headers["X-Request-ID"])
    assert event.outcome == "failed" and details(event)["stream"]["outcome"] == "backend_failed"


def test_a_client_going_away_stops_the_backend_and_pays_for_what_was_generated(traffic):
    model = traffic.model("primary")
    traffic.behave("primary", stream_fault={"after_chunks": 2, "kind": "hang"})
    before = traffic.balances()
    headers = traffic.headers()
    with traffic.stream(model, headers=headers, max_tokens=16) as response:
        received = ""
        for line in response.iter_lines():  # read as it comes
            for chunk in sse([line]):
                received += chunk["choices"][0]["delta"].get("content") or ""
            if len(received) == 8:
                break  # leaving the block closes the connection
    deadline, record = time.monotonic() + 10, None
    while time.monotonic() < deadline:
        record = traffic.calls("primary")[-1].get("stream")
        if record and record["client_went_away"]:
            break
        time.sleep(0.05)
    assert record and record["client_went_away"], f"the backend never saw the gateway go away: {record}"
    reservation = traffic.settled(headers["X-Request-ID"])
    assert (reservation.status, reservation.actual_micros) == ("finalized", cost(PROMPT_BOUND, 8))
    after = traffic.balances()
    assert after[1] == before[1] and before[0] - after[0] == reservation.actual_micros  # the rest of the hold back
    [event] = traffic.events(headers["X-Request-ID"])
    assert details(event)["stream"]["outcome"] == "client_disconnected"


def test_time_to_first_token_is_measured(traffic):
    assert "gateway_chat_time_to_first_token_seconds_count" in traffic.http.get("/metrics").text


# ---- Idempotency-Key ---------------------------------------------------------------------------------------------

def test_a_retry_replays_the_first_answer_without_a_backend_or_a_charge(traffic):
    model = traffic.model("primary")
    key = secrets.token_hex(8)
    first = traffic.ask(model, headers=traffic.headers(**{"Idempotency-Key": key}), max_tokens=5)
    spent = traffic.balances()
    retry_headers = traffic.headers(**{"Idempotency-Key": key})
    again = traffic.ask(model, headers=retry_headers, max_tokens=5)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert len(traffic.calls("primary")) == 1 and traffic.balances() == spent
    [event] = traffic.events(retry_headers["X-Request-ID"])
    assert details(event) == {"replayed": True}
    other = traffic.ask(model, "another question", headers=traffic.headers(**{"Idempotency-Key": key}))
    assert (other.status_code, other.json()["error"]["code"]) == (422, "idempotency_key_reused")


def test_a_retry_while_the_first_is_in_flight_is_409(traffic):
    model = traffic.model("primary")
    traffic.behave("primary", latency_ms=1500)
    key = secrets.token_hex(8)
    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(
        answer=traffic.ask(model, headers=traffic.headers(**{"Idempotency-Key": key}), max_tokens=5)))
    worker.start()
    deadline = time.monotonic() + 5
    while not traffic.calls("primary") and time.monotonic() < deadline:
        time.sleep(0.02)
    racing = httpx.post(f"{traffic.base}/v1/chat/completions", headers=traffic.headers(**{"Idempotency-Key": key}),
                        json={"model": model, "messages": [{"role": "user", "content": CONTENT}], "max_tokens": 5})
    worker.join()
    assert (racing.status_code, racing.json()["error"]["code"]) == (409, "idempotency_conflict")
    assert first["answer"].status_code == 200 and len(traffic.calls("primary")) == 1


def test_a_retried_stream_replays_the_recorded_chunks(traffic):
    model = traffic.model("primary")
    key = secrets.token_hex(8)
    with traffic.stream(model, headers=traffic.headers(**{"Idempotency-Key": key}), max_tokens=16) as response:
        first = list(response.iter_lines())
    with traffic.stream(model, headers=traffic.headers(**{"Idempotency-Key": key}), max_tokens=16) as response:
        assert response.headers["idempotent-replayed"] == "true"
        again = list(response.iter_lines())
    assert sse(again) == sse(first) and sse(first)[-1] == "[DONE]"
    assert len(traffic.calls("primary")) == 1
