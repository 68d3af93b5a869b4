"""An application built on the official OpenAI SDK, as a scenario drives it: listing models, completing,
streaming, retrying as the SDK does, and what it received (the SDK's own objects and error classes), checked
against the exchanges its calls made (support.client.openai_sdk records them)."""
from __future__ import annotations

import secrets

import openai

from support.client.assertions import expect_equal, expect_true
from support.client.openai_sdk import SdkApplication, SdkCall
from support.domain.budgets import mentions_amount
from support.domain.model_routes import ModelRoutes
from support.domain.platform_api import CONTENT, Platform
from support.domain.rate_limits import told_by, told_seconds
from support.domain.request_costs import RequestCosts
from support.harness.money import usd

RETRY_AFTER_TOLERANCE_SECONDS = 0.05
# Giving up sooner than the backend answers (it holds the first try until the SDK has given up on it): the SDK waits
# SDK_TIMEOUT_SECONDS per try and tries up to 1 + SDK_RETRIES times (its back-off is 0.5 s, 1 s, 2 s... less up to
# a quarter), so a retry finds the first request finished (its answer replayed; a replay takes a few ms, so it is
# answered well within the try's time) or still running (409, which the SDK retries).
SDK_TIMEOUT_SECONDS = 0.2
SDK_RETRIES = 4
ERRORS = {"authentication": (openai.AuthenticationError, 401), "not-found": (openai.NotFoundError, 404),
          "payment required": (openai.APIStatusError, 402)}


class Applications:
    def __init__(self, routing: ModelRoutes, costs: RequestCosts, add_cleanup):
        self.routing, self.costs, self.add_cleanup = routing, costs, add_cleanup
        self.api, self.world = routing.api, routing.world
        self.platform: Platform = routing.platform

    def use_sdk(self, key: str | None) -> SdkApplication:
        """The application's SDK client with one of the org's keys (None: a key that does not exist)."""
        secret = self.world.key(key).secret if key is not None else "tg_unknown" + secrets.token_urlsafe(24)
        app = self.world.application.sdk = SdkApplication(self.api, secret)
        self.add_cleanup(app.close)
        return app

    @property
    def sdk(self) -> SdkApplication:
        if self.world.application.sdk is None:
            raise AssertionError("The scenario has no application yet: say which API key it uses first")
        return self.world.application.sdk

    def _keep(self, call: SdkCall) -> SdkCall:
        self.world.application.call = call
        if call.last_exchange() is not None:
            self.world.last.answer = call.last_exchange()
        return call

    # ---- calls -----------------------------------------------------------------------------------------------------

    def list_models(self) -> SdkCall:
        return self._keep(self.sdk.call(lambda client, headers: list(client.models.list(extra_headers=headers))))

    def _completion(self, model: str, idempotency_key: str | None = None):
        served = self.routing.served_as(model)

        def create(client, headers):
            if idempotency_key is not None:
                headers = {**headers, "Idempotency-Key": idempotency_key}
            return client.chat.completions.create(model=served, messages=[{"role": "user", "content": CONTENT}],
                                                  max_tokens=32, extra_headers=headers)
        return create

    def complete(self, model: str, *, idempotency_key: str | None = None, **options) -> SdkCall:
        """A chat completion; `options` for the SDK (timeout, max_retries), an Idempotency-Key when given."""
        self.world.application.asked = model
        if model in self.world.models:
            self.routing.note_calls_before(model)
        return self._keep(self.sdk.call(self._completion(model, idempotency_key), **options))

    def complete_giving_up_early(self, model: str) -> SdkCall:
        """With an Idempotency-Key, each try given up sooner than the backend answers, the SDK retrying."""
        return self.complete(model, idempotency_key=self.routing.ns.name("sdk-retry"), timeout=SDK_TIMEOUT_SECONDS,
                             max_retries=SDK_RETRIES)

    def stream(self, model: str) -> SdkCall:
        """A streamed completion asking for its usage, read to its end: the result is the list of chunks."""
        self.routing.note_calls_before(model)
        served = self.routing.served_as(model)

        def stream(client, headers):
            with client.chat.completions.create(model=served, messages=[{"role": "user", "content": CONTENT}],
                                                max_tokens=32, stream=True, stream_options={"include_usage": True},
                                                extra_headers=headers) as chunks:
                return list(chunks)
        return self._keep(self.sdk.call(stream))

    # ---- what the application received ------------------------------------------------------------------------------

    def _succeeded(self) -> SdkCall:
        call = self.world.application.call
        expect_true(call is not None and call.error is None, f"Expected the application's call to succeed, but the "
                    f"SDK raised {type(call.error).__name__}: {call.error}", call.last_exchange())
        return call

    def expect_model_listed(self, model: str) -> None:
        call = self._succeeded()
        seen = [m.id for m in call.result]
        expect_true(self.routing.served_as(model) in seen, f"Expected {model!r} "
                    f"({self.routing.served_as(model)}) among the models the SDK listed, but it listed {seen}",
                    call.last_exchange())

    def expect_answer_with_usage(self) -> None:
        """The SDK's ChatCompletion says what the gateway's answer said, usage included."""
        call = self._succeeded()
        completion, exchange = call.result, call.last_exchange()
        expect_true(isinstance(completion, openai.types.chat.ChatCompletion), f"Expected a ChatCompletion, but the "
                    f"SDK returned {type(completion).__name__}", exchange)
        answer = exchange.json()
        expect_equal([c.message.content for c in completion.choices],
                     [c["message"]["content"] for c in answer["choices"]], "the answer's text as the SDK gave it",
                     exchange)
        expect_true(bool(completion.choices[0].message.content), "Expected the answer to have text", exchange)
        usage = completion.usage
        expect_equal(usage and (usage.prompt_tokens, usage.completion_tokens),
                     (answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"]),
                     "the usage as the SDK gave it", exchange)

    def expect_pieces_say_whole(self) -> None:
        """Several pieces, which put together say what the backend answers the same request in one piece."""
        call = self._succeeded()
        chunks, exchange = call.result, call.last_exchange()
        pieces = [c for c in chunks if c.choices and c.choices[0].delta.content]
        expect_true(len(pieces) >= 2, f"Expected the answer in several pieces, but the SDK gave {len(pieces)}",
                    exchange)
        expect_equal(["".join(c.choices[0].delta.content for c in pieces)], self.costs.whole_answer(exchange),
                     "the pieces the SDK gave put together, against the backend's answer in one piece", exchange)

    def expect_usage_at_end(self) -> None:
        call = self._succeeded()
        chunks, exchange = call.result, call.last_exchange()
        last = chunks[-1] if chunks else None
        expect_true(last is not None and not last.choices and last.usage is not None, f"Expected the SDK's last "
                    f"chunk to carry the usage and no choices, but it was {last}", exchange)
        reported = self.costs.backend_usage(exchange)
        expect_equal((last.usage.prompt_tokens, last.usage.completion_tokens),
                     (reported["prompt_tokens"], reported["completion_tokens"]),
                     "the usage the SDK gave at the end of the stream, against the backend's", exchange)

    def expect_error(self, kind: str, *, mentions: list[str]) -> None:
        """The SDK raised its own error class for `kind` (see ERRORS), with the status, and a message naming each of
        `mentions` (any one of the alternatives in a tuple)."""
        error_class, status = ERRORS[kind]
        call = self.world.application.call
        exchange = call.last_exchange()
        error = call.error
        expect_true(isinstance(error, error_class) and getattr(error, "status_code", None) == status,
                    f"Expected the SDK to raise {error_class.__name__} with status {status}, but it "
                    f"{'raised ' + type(error).__name__ + ': ' + str(error) if error else 'returned ' + repr(call.result)}",
                    exchange)
        for wanted in mentions:
            choices = wanted if isinstance(wanted, tuple) else (wanted,)
            expect_true(any(c.lower() in str(error).lower() for c in choices), f"Expected the SDK's error message to "
                        f"name {' or '.join(map(repr, choices))}, but it said: {error}", exchange)

    def expect_not_found(self) -> None:
        self.expect_error("not-found", mentions=[self.routing.served_as(self.world.application.asked)])

    def expect_budget_error(self, org: str) -> None:
        record = self.world.org(org)
        self.expect_error("payment required", mentions=[(record.slug, org)])
        limit = self.platform.usage(org).json()["limit_micros"]
        message = str(self.world.application.call.error)
        expect_true(mentions_amount(message, limit), f"Expected the SDK's error message to state the limit of {org!r} "
                    f"({usd(limit)}), but it said: {message}", self.world.application.call.last_exchange())

    def expect_waited_for_retry_after(self) -> None:
        """The first attempt was refused 429 with the time to wait (retry-after-ms, which the SDK reads first, else
        Retry-After); the next one left no sooner than it said, and was served: the time told was enough."""
        call = self.world.application.call
        attempts = call.attempts
        first = attempts[0].exchange if attempts else None
        expect_true(len(attempts) >= 2 and first.status == 429, f"Expected a 429 and then a retry by the SDK, but "
                    f"the attempts were {[a.exchange.status or a.exchange.error for a in attempts]}", first)
        told, header = told_seconds(first), told_by(first)
        waited = attempts[1].sent_at - attempts[0].answered_at
        expect_true(waited >= told - RETRY_AFTER_TOLERANCE_SECONDS, f"Expected the SDK to wait the {told:.3f} s "
                    f"its {header} asked before retrying, but it retried after {waited:.3f} s", first)
        expect_equal(attempts[1].exchange.status, 200, f"the status of the SDK's retry, sent {waited:.3f} s after "
                     f"the refusal whose {header} asked for {told:.3f} s (request {first.request_id})",
                     attempts[1].exchange)

    def expect_tried_more_than_once(self) -> None:
        call = self.world.application.call
        expect_true(len(call.attempts) >= 2, f"Expected the SDK to try more than once, but it made "
                    f"{len(call.attempts)} attempt(s): {[a.exchange.status or a.exchange.error for a in call.attempts]}",
                    call.last_exchange())
