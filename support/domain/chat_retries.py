"""Chat completions retried with an Idempotency-Key, as a scenario sees them: a first request (answered, streamed,
or still running in the background), the same key sent again (with the same body, another body, by another org),
and what the retry got and the backend saw."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import requests

from support.client.api import Exchange
from support.client.assertions import expect_equal, expect_status, expect_true, problem_field
from support.client.event_streams import StreamedExchange
from support.domain.model_routes import ModelRoutes
from support.domain.platform_api import chat_body
from support.domain.streamed_chat import StreamedChat
from support.harness.waits import wait_until

OTHER_CONTENT = "Something else entirely"


class ChatRetries:
    def __init__(self, routing: ModelRoutes, streams: StreamedChat, add_cleanup: Callable, timeout: float):
        self.routing, self.streams, self.add_cleanup, self.timeout = routing, streams, add_cleanup, timeout
        self.api, self.world = routing.api, routing.world
        self.holding: str | None = None  # the backend holding the scenario's first request, if any

    def key(self, words: str) -> str:
        """The Idempotency-Key the sentence's words stand for, unique to this scenario of this run."""
        return self.world.idempotency_keys.setdefault(words, self.routing.ns.name(words))

    def pause(self, backend: str) -> None:
        """The backend holds the next request it gets, unanswered, until the scenario lets it answer
        (`release_held`): it is "still running" for exactly as long as the scenario needs. A request after it is
        answered at once, so one the scenario did not expect is not held up."""
        self.routing.behave(backend, "ok", hold=1)
        self.holding = backend
        self.add_cleanup(self.release_held)  # nothing is left held, whatever the scenario saw

    def release_held(self) -> int:
        """The held request is answered now; how many requests the backend was holding."""
        return self.routing.backends.release(self.routing.backend(self.holding)) if self.holding else 0

    def _send(self, key: str, body: dict, words: str) -> Exchange:
        return self.api.post("/v1/chat/completions", token=self.world.key(key).secret, json_body=body,
                             headers={"Idempotency-Key": self.key(words)})

    # ---- the first request ------------------------------------------------------------------------------------------

    def ask_first(self, key: str, model: str, words: str) -> Exchange:
        self.routing.note_calls_before(model)
        body = self.world.retries.first_body = chat_body(self.routing.served_as(model))
        first = self.world.retries.first = self._send(key, body, words)
        return expect_status(first, 200, f"a chat completion with the idempotency key {words!r}")

    def stream_first(self, key: str, model: str, words: str) -> StreamedExchange:
        body = self.world.retries.first_body = self.streams.body(model)
        first = self.world.retries.first = self.streams.stream(key, model, idempotency_key=self.key(words), body=body)
        self.streams.expect_openai_ending(first)
        return first

    def start_first(self, key: str, model: str, words: str) -> None:
        """The first request is sent in the background; returns once the backend has it (the key is then taken)."""
        self.routing.note_calls_before(model)
        body = self.world.retries.first_body = chat_body(self.routing.served_as(model))
        exchange = self.api.prepare("POST", "/v1/chat/completions", token=self.world.key(key).secret, json_body=body,
                                    headers={"Idempotency-Key": self.key(words)})
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="first-request")
        session = requests.Session()
        in_flight = self.world.retries.in_flight = pool.submit(self.api.send, exchange, json_body=body,
                                                               session=session)
        pool.shutdown(wait=False)
        self.add_cleanup(session.close)
        self.add_cleanup(in_flight.exception, timeout=self.timeout)  # the scenario ends only once it is answered
        self.add_cleanup(self.release_held)  # (cleanups run last-added first: it is let go before that wait)
        self.world.retries.first = exchange
        wait_until(f"the primary backend to receive the first request ({exchange.request_id})",
                   lambda: self.routing.calls_with_request_id("primary", exchange.request_id), bool,
                   timeout=self.timeout, describe=lambda calls: f"{len(calls)} calls with that request id",
                   max_interval=0.02)  # the retry must come while the first is still running: look often

    def first_answered(self) -> Exchange:
        """The first request, once its answer has come (recorded as evidence from the scenario's thread): a backend
        holding it is let answer now."""
        retries = self.world.retries
        if retries.in_flight is not None:
            self.release_held()
            retries.in_flight.exception(timeout=self.timeout)
            self.api.record(retries.first)
            retries.in_flight = None
        return expect_status(retries.first, 200, "the first chat completion with the idempotency key")

    # ---- the retry -----------------------------------------------------------------------------------------------------

    def ask_again(self, key: str, words: str) -> Exchange:
        retry = self.world.retries.retry = self._send(key, self.world.retries.first_body, words)
        return retry

    def stream_again(self, key: str, words: str) -> StreamedExchange:
        model = self.routing.current().name
        retry = self.world.retries.retry = self.streams.stream(key, model, idempotency_key=self.key(words),
                                                               body=self.world.retries.first_body)
        return retry

    def ask_other(self, key: str, model: str, words: str) -> Exchange:
        self.routing.note_calls_before(model)
        return self._send(key, chat_body(self.routing.served_as(model), content=OTHER_CONTENT), words)

    def ask_with_key(self, key: str, model: str, words: str) -> Exchange:
        """Another caller's first request with the same key words."""
        self.routing.note_calls_before(model)
        return self._send(key, chat_body(self.routing.served_as(model)), words)

    # ---- what came back ------------------------------------------------------------------------------------------------

    def expect_replayed(self, retry: Exchange) -> None:
        first = self.world.retries.first
        expect_status(retry, first.status, "the retry with the same idempotency key")
        expect_equal(retry.json(), first.json(), f"the retry's answer, against the first's [request id "
                     f"{first.request_id}]", retry)

    def expect_stream_replayed(self, retry: StreamedExchange) -> None:
        first = self.world.retries.first
        expect_status(retry, 200, "the streamed retry with the same idempotency key")
        expect_equal(retry.texts(), first.texts(), f"the text of each choice in the retry, against the first stream's "
                     f"[request id {first.request_id}]", retry)
        expect_equal(retry.finish_reasons(), first.finish_reasons(), "each choice's finish reason in the retry", retry)

    def expect_received_once(self, backend: str, answer: Exchange) -> None:
        """The backend saw the first request's body once, whatever was sent after it."""
        messages = self.world.retries.first_body["messages"]
        seen = [c for c in self.routing.calls(backend) if (c.get("body") or {}).get("messages") == messages]
        expect_equal(len(seen), 1, f"the number of times the {backend} backend received the request (request ids "
                     f"{[c['headers'].get('x-request-id') for c in seen]})", answer)

    @staticmethod
    def expect_refused(exchange: Exchange, status: int, code: str, doing: str) -> None:
        expect_status(exchange, status, doing)
        expect_equal(problem_field(exchange, "code"), code, "the error code", exchange)
        expect_true(bool(problem_field(exchange, "message")), "Expected a message saying why", exchange)
