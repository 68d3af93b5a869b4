"""The official OpenAI Python SDK pointed at the gateway, as an application uses it, with every HTTP exchange it
makes recorded as the suite's own are: masked evidence on the step that made it, kept with the scenario's
exchanges, under the scenario's request ids.

The SDK is given an `httpx.Client` whose transport records each attempt (a retry is an attempt of its own, a
timed-out attempt too, which an event hook would never see) with when it was sent and when its answer began. A
streamed answer is recorded once the SDK has read it, with its events and their arrival times. Each call of the
application sends one X-Request-ID (and the scenario's trace), which its retries repeat: the gateway's audit, logs
and ledger name the call the application made."""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Callable

import httpx
import openai

from support.client.api import ApiClient, Exchange
from support.client.event_streams import EventReader, StreamedExchange
from support.harness.redaction import register_secret


@dataclass
class Attempt:
    """One HTTP request the SDK made."""
    exchange: Exchange
    sent_at: float  # time.perf_counter() when the SDK handed it to its HTTP client
    answered_at: float | None = None  # when the head of the answer arrived (None: no answer, say a time-out)


@dataclass
class SdkCall:
    """One call the application made through the SDK: what it returned or raised, and the attempts it took."""
    attempts: list[Attempt]
    result: object = None
    error: Exception | None = None

    def last_exchange(self) -> Exchange | None:
        return self.attempts[-1].exchange if self.attempts else None


class RecordingTransport(httpx.BaseTransport):
    def __init__(self, api: ApiClient, attempts: list[Attempt], inner: httpx.BaseTransport | None = None):
        self.api, self.attempts = api, attempts
        self.inner = inner or httpx.HTTPTransport()
        self.on_no_answer: list[Callable[[Attempt], None]] = []  # called, once each, when an attempt gets no answer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()
        try:
            body = json.loads(content) if content else None
        except ValueError:
            body = content.decode("utf-8", "replace")
        attempt = Attempt(Exchange(request.method, str(request.url), request.url.raw_path.decode("ascii"),
                                   dict(request.headers), body, request.headers.get("x-request-id", "(none)")),
                          time.perf_counter())
        self.attempts.append(attempt)
        exchange = attempt.exchange
        try:
            response = self.inner.handle_request(request)
        except httpx.HTTPError as exc:
            exchange.elapsed_ms = (time.perf_counter() - attempt.sent_at) * 1000
            exchange.error = f"{type(exc).__name__}: {exc}"
            self.api.record(exchange)
            hooks, self.on_no_answer = self.on_no_answer, []
            for hook in hooks:
                hook(attempt)
            raise
        attempt.answered_at = time.perf_counter()
        exchange.status, exchange.response_headers = response.status_code, response.headers
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            attempt.exchange = StreamedExchange(**exchange.__dict__)
            response.stream = _RecordingStream(response.stream, attempt, self.api)
            return response
        try:
            raw = b"".join(response.stream)
        finally:
            response.close()
        exchange.elapsed_ms = (time.perf_counter() - attempt.sent_at) * 1000
        exchange.text = raw.decode("utf-8", "replace") if "content-encoding" not in response.headers else \
            f"<{len(raw)} bytes, {response.headers['content-encoding']}>"
        self.api.record(exchange)
        return httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(raw),
                              extensions=response.extensions)

    def close(self) -> None:
        self.inner.close()


class _RecordingStream(httpx.SyncByteStream):
    """A streamed answer passed to the SDK piece by piece as it arrives, recorded once the SDK closes it."""

    def __init__(self, inner: httpx.SyncByteStream, attempt: Attempt, api: ApiClient):
        self.inner, self.attempt, self.api = inner, attempt, api
        self.reader = EventReader(attempt.exchange, attempt.sent_at)
        self.recorded = False

    def __iter__(self):
        for piece in self.inner:
            self.reader.feed(piece)
            yield piece

    def close(self) -> None:
        self.inner.close()
        if not self.recorded:
            self.recorded = True
            self.reader.close()
            self.attempt.exchange.elapsed_ms = (time.perf_counter() - self.attempt.sent_at) * 1000
            self.api.record(self.attempt.exchange)


class SdkApplication:
    """An application's `openai.OpenAI` client: the gateway's /v1 as its base URL, one of the org's API keys."""

    def __init__(self, api: ApiClient, api_key: str, transport: httpx.BaseTransport | None = None):
        register_secret(api_key, "api-key")
        self.api = api
        self.attempts: list[Attempt] = []
        self.transport = RecordingTransport(api, self.attempts, transport)
        self.http = httpx.Client(transport=self.transport, timeout=api.timeout)
        self.client = openai.OpenAI(base_url=f"{api.base_url}/v1", api_key=api_key, timeout=api.timeout,
                                    http_client=self.http)

    def when_an_attempt_gets_no_answer(self, hook: Callable[[], object]) -> None:
        """`hook()` runs once, in the SDK's thread, as soon as an attempt ends without an answer (say the SDK gave up
        waiting), before the SDK retries."""
        self.transport.on_no_answer.append(lambda attempt: hook())

    def call(self, operation: Callable[[openai.OpenAI, dict], object], **options) -> SdkCall:
        """Run `operation(client, headers)` (the client with `options` such as timeout and max_retries): the call
        sends `headers` (its request id and trace) on every attempt. An SDK error is kept on the call, not raised."""
        headers = {"X-Request-ID": self.api.next_request_id(),
                   "traceparent": f"00-{self.api.trace_id}-{secrets.token_hex(8)}-01"}
        first = len(self.attempts)
        call = SdkCall([])
        client = self.client.with_options(**options) if options else self.client
        try:
            call.result = operation(client, headers)
        except openai.OpenAIError as exc:
            call.error = exc
        call.attempts = self.attempts[first:]
        return call

    def close(self) -> None:
        self.http.close()
