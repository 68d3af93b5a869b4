"""What one chat request cost, and what it should have cost: the hold the gateway placed for it and its charge
(read from the database once the gateway has settled it), and the usage its backend reported or generated.

The usage comes from the answer when the client saw it (the answer's `usage`, or a stream's usage chunk); else
from the model backend stub's record of the call, read over its control API (a stream whose client did not ask
for usage, or that was cut short): the prompt as the stub counted it (`stream.prompt_tokens`), the completion as
the tokens it had written (`stream.completion_tokens_sent`), or the usage its behaviour was told to report."""
from __future__ import annotations

import json

from support.client.api import Exchange
from support.client.assertions import expect_true
from support.client.event_streams import StreamedExchange
from support.database import spend
from support.database.reflection import Database
from support.domain.model_routes import ModelRoutes
from support.harness.waits import wait_until

SETTLED = ("finalized", "released")


class RequestCosts:
    def __init__(self, routing: ModelRoutes, db: Database, timeout: float):
        self.routing, self.db, self.timeout = routing, db, timeout

    # ---- the gateway's side: the hold and the charge ---------------------------------------------------------------

    def settled_hold(self, exchange: Exchange) -> dict:
        """The reservation placed for the request, once the gateway has finalized or released it (a stream is
        settled when it ends, which may be just after the client has read its last event)."""
        return wait_until(f"the hold placed for request {exchange.request_id} to be settled",
                          lambda: spend.reservation_of_request(self.db, exchange.request_id),
                          lambda row: row is not None and row["status"] in SETTLED, timeout=self.timeout,
                          describe=lambda row: "no reservation for it" if row is None else
                          f"reservation {row['id']} {row['status']}, amount {row['amount_micros']} micro-USD")

    def cost(self, usage: dict) -> int:
        return self.routing.cost(usage)

    # ---- the backend's side: what it reported, what it generated -------------------------------------------------

    def backend_call(self, exchange: Exchange) -> tuple[str, dict]:
        """(backend name, the stub's record) of the call that served the request: the backend the gateway named, or
        any backend of the model asked; for a stream, once the stream is over."""
        model = self.routing.current()
        named = exchange.response_headers.get("X-Gateway-Backend") if exchange.response_headers else None
        names = [named] if named in model.backends else list(model.backends)

        def find():
            for name in names:
                calls = self.routing.calls_with_request_id(name, exchange.request_id)
                if calls:
                    return name, calls[-1]
            return None

        return wait_until(f"the backend's record of request {exchange.request_id} (its stream over, if it streamed)",
                          find, lambda found: found is not None and (found[1].get("stream") or {"ended": True}).get(
                              "ended", found[1]["stream"].get("finished")), timeout=self.timeout,
                          describe=lambda found: "no call with that request id on " + ", ".join(names)
                          if found is None else f"{found[0]}: stream {found[1].get('stream')}")

    def generated_usage(self, exchange: Exchange) -> dict:
        """The prompt and the completion tokens the backend wrote for the request, by its own count."""
        _, call = self.backend_call(exchange)
        written = (call.get("stream") or {}).get("completion_tokens_sent")
        expect_true(written is not None, f"Expected the backend's record of request {exchange.request_id} to be a "
                    f"stream's, with the tokens it wrote, but it was: {call}", exchange)
        return {"prompt_tokens": call["stream"]["prompt_tokens"], "completion_tokens": written}

    def whole_answer(self, exchange: Exchange) -> list[str]:
        """Each choice's text as the backend answers the request in one piece."""
        _, call = self.backend_call(exchange)
        expect_true("answer" in call, f"Expected the backend's record of request {exchange.request_id} to hold the "
                    f"answer it gave, but it was: {call}", exchange)
        return call["answer"]["contents"]

    def generated_text(self, exchange: Exchange) -> list[str]:
        """Each choice's text as far as the backend wrote it, by its record of the stream."""
        _, call = self.backend_call(exchange)
        return call["stream"]["contents_sent"]

    def generated_bytes(self, exchange: Exchange) -> dict:
        """The most any tokenizer can count in what the backend generated, and in the request that asked for it
        (the whole body as JSON, which holds every token-bearing field and more): their UTF-8 bytes, as usage."""
        _, call = self.backend_call(exchange)
        body = json.dumps(call["body"], ensure_ascii=False, separators=(",", ":"))
        return {"prompt_tokens": len(body.encode("utf-8")),
                "completion_tokens": sum(len(text.encode("utf-8")) for text in self.generated_text(exchange))}

    def backend_usage(self, exchange: Exchange) -> dict:
        """The usage the backend gave for the streamed request: what its behaviour says to report, else its count of
        the prompt and of what it wrote."""
        name, _ = self.backend_call(exchange)
        told = self.routing.backends.behaviour(self.routing.backend(name)).get("usage")
        return told if told is not None else self.generated_usage(exchange)

    def reported_usage(self, exchange: Exchange) -> dict:
        """The usage the backend reported for the request: as the client received it, else from the backend."""
        if isinstance(exchange, StreamedExchange):
            return exchange.usage() or self.backend_usage(exchange)
        return exchange.json()["usage"]

    def settled_usage(self, exchange: Exchange) -> dict:
        """The usage the request must have been charged for, once the gateway has settled its hold."""
        self.settled_hold(exchange)
        return self.reported_usage(exchange)
