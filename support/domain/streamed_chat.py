"""Streamed chat completions as a scenario sees them: a key streaming from a model (asking for its usage or not, a
long answer, going away after the first pieces, with an Idempotency-Key), the same request answered in one piece
to compare with, backends that write slowly or fail mid-stream, and what the stream, the backend, the org's books
and its audit log say afterwards."""
from __future__ import annotations

from support.client.api import Exchange
from support.client.assertions import expect_equal, expect_status, expect_true
from support.client.event_streams import StreamedExchange, send_streamed
from support.database import spend
from support.domain.model_routes import ModelRoutes
from support.domain.platform_api import chat_body
from support.domain.request_costs import RequestCosts
from support.harness.money import usd

SLOW_CHUNK_DELAY_MS = 60  # a backend writing "slowly" waits this long between its events
PAUSE_AFTER_PIECES = 2  # a backend that pauses mid-answer does so after this many pieces of text
PIECES_BEFORE_LEAVING = 3  # a client that goes away mid-stream does so after this many pieces of text
FAULT_AFTER_PIECES = 3  # a backend that fails mid-stream does so after writing this many pieces
WRITTEN_AFTER_LEAVING = 3  # pieces a backend may still write while the gateway notices its client has gone
# A long answer: the stub echoes the question, so this is a few hundred characters of text, in ~80 pieces.
LONG_QUESTION = ("Tell me, in as many words as you like, everything a gateway does between an application and its "
                 "models: who may call, which backend answers, what is held before the call and charged after it, "
                 "what is written to the audit log, and what happens when a backend fails halfway through.")
LONG_MAX_TOKENS = 200


class StreamedChat:
    def __init__(self, routing: ModelRoutes, costs: RequestCosts):
        self.routing, self.costs = routing, costs
        self.api, self.world, self.db = routing.api, routing.world, routing.db
        self.pausing: str | None = None  # the backend that pauses mid-answer until the caller has its first piece
        self.at_first_piece: dict[str, dict | None] = {}  # request id -> the backend's record of the stream then

    # ---- backends ------------------------------------------------------------------------------------------------

    def write_slowly(self, backend: str) -> None:
        self.routing.behave(backend, "ok", chunk_delay_ms=SLOW_CHUNK_DELAY_MS)

    def pause_until_first_pieces_arrive(self, backend: str) -> None:
        """The backend writes its first pieces, then writes nothing more until the caller has received one (the
        stream's reader lets it go on): the first piece reaches the caller while the backend is surely still
        writing, without a delay between pieces to wait out."""
        self.routing.behave(backend, "ok", stream_fault={"after_chunks": PAUSE_AFTER_PIECES, "kind": "pause"})
        self.pausing = backend

    def never_report_usage(self, backend: str) -> None:
        self.routing.behave(backend, "ok", stream_usage="never")

    def fail_mid_stream(self, backend: str) -> None:
        self.routing.behave(backend, "ok", stream_fault={"after_chunks": FAULT_AFTER_PIECES, "kind": "error"})

    # ---- requests ------------------------------------------------------------------------------------------------

    def body(self, model: str, *, long: bool = False, include_usage: bool = False) -> dict:
        extra = {"stream_options": {"include_usage": True}} if include_usage else {}
        if long:
            return chat_body(self.routing.served_as(model), LONG_MAX_TOKENS, LONG_QUESTION, stream=True, **extra)
        return chat_body(self.routing.served_as(model), stream=True, **extra)

    def stream(self, key: str, model: str, *, long: bool = False, include_usage: bool = False,
               leave_after: int | None = None, idempotency_key: str | None = None,
               body: dict | None = None) -> StreamedExchange:
        """Stream a completion with the key, reading each piece as it comes (going away after `leave_after`)."""
        self.routing.note_calls_before(model)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return send_streamed(self.api, "/v1/chat/completions", token=self.world.key(key).secret,
                             json_body=body or self.body(model, long=long, include_usage=include_usage),
                             headers=headers, leave_after=leave_after,
                             on_event=self._let_go_at_first_piece(self.pausing) if self.pausing else None)

    def _let_go_at_first_piece(self, backend: str):
        """Once the first piece of text has arrived: note what the backend's record of the stream says then, and
        let the paused backend write the rest."""
        def on_event(exchange: StreamedExchange) -> None:
            if exchange.request_id in self.at_first_piece or not exchange.content_events():
                return
            calls = self.routing.calls_with_request_id(backend, exchange.request_id)
            self.at_first_piece[exchange.request_id] = calls[-1].get("stream") if calls else None
            self.routing.backends.release(self.routing.backend(backend))
        return on_event

    def in_one_piece(self, streamed: StreamedExchange) -> Exchange:
        """The same request, by the same key, without streaming."""
        body = {k: v for k, v in streamed.request_body.items() if k not in ("stream", "stream_options")}
        exchange = self.api.post("/v1/chat/completions", json_body=body,
                                 headers={"Authorization": streamed.request_headers["Authorization"]})
        return expect_status(exchange, 200, "the same chat completion asked for in one piece")

    # ---- what the stream says --------------------------------------------------------------------------------------

    @staticmethod
    def expect_streamed(exchange: StreamedExchange) -> None:
        expect_status(exchange, 200, "a streamed chat completion")
        expect_true(exchange.is_event_stream, f"Expected the answer to be an event stream (text/event-stream), but "
                    f"it was {exchange.response_headers.get('Content-Type')!r}", exchange)

    def expect_in_pieces(self, exchange: StreamedExchange) -> None:
        """Several pieces, the first before the backend has finished: relayed as it writes, never gathered whole
        first. A backend that pauses mid-answer must still have been paused when the first piece arrived; for one
        writing slowly, the first piece must come well before the last (by half of what the backend spends writing
        after its first piece)."""
        self.expect_streamed(exchange)
        pieces = exchange.content_events()
        if self.pausing:
            seen = self.at_first_piece.get(exchange.request_id)
            told = (f"when it arrived the backend's record of the stream said {seen}" if seen
                    else "no piece arrived" if exchange.request_id not in self.at_first_piece
                    else "the backend has no record of the request")
            expect_true(bool(seen) and seen.get("paused") and not seen.get("finished"), f"Expected the first piece "
                        f"to arrive while the {self.pausing} backend was still writing (it pauses after "
                        f"{PAUSE_AFTER_PIECES} pieces until the caller has one), but {told}", exchange)
        expect_true(len(pieces) >= 3, f"Expected the answer in several pieces of text, but it came in {len(pieces)}",
                    exchange)
        if self.pausing:
            return
        backend = exchange.response_headers.get("X-Gateway-Backend") or "primary"
        delay_ms = self.routing.backends.behaviour(self.routing.backend(backend))["chunk_delay_ms"]
        after_first = len(exchange.events) - exchange.events.index(pieces[0]) - 1
        margin = after_first * delay_ms / 2
        first, last = pieces[0].at_ms, exchange.events[-1].at_ms
        expect_true(first + margin <= last, f"Expected the first piece to arrive while the backend was still writing "
                    f"(the backend waits {delay_ms} ms between its {len(exchange.events)} events, so at least "
                    f"{margin:.0f} ms before the last), but the first piece came at {first:.0f} ms and the last "
                    f"event at {last:.0f} ms", exchange)

    def expect_says_what_whole_says(self, exchange: StreamedExchange) -> None:
        self.expect_streamed(exchange)
        whole = self.in_one_piece(exchange)
        expected = {c["index"]: c["message"]["content"] for c in whole.json()["choices"]}
        expect_equal(exchange.texts(), expected, f"each choice's text put together from the stream, against the "
                     f"answer in one piece [request id {whole.request_id}]", exchange)
        reasons = {c["index"]: c["finish_reason"] for c in whole.json()["choices"]}
        expect_equal(exchange.finish_reasons(), reasons, "each choice's finish reason in the stream", exchange)

    def expect_openai_ending(self, exchange: StreamedExchange) -> None:
        """Every event a chat.completion.chunk of one id, every choice finished, then `data: [DONE]`, no error."""
        self.expect_streamed(exchange)
        expect_true(exchange.ended_with_done, f"Expected the stream to end with 'data: [DONE]', but its last event "
                    f"was {exchange.events[-1].data if exchange.events else 'none'!r}", exchange)
        chunks = [e.chunk() for e in exchange.events[:-1]]
        expect_true(all(c is not None and c.get("object") == "chat.completion.chunk" for c in chunks),
                    "Expected every event before [DONE] to be a chat.completion.chunk JSON object", exchange)
        expect_equal(len({c.get("id") for c in chunks}), 1, "the number of distinct chunk ids", exchange)
        expect_true(exchange.error_event() is None, f"Expected no error event, but got {exchange.error_event()}", exchange)
        expect_equal(set(exchange.finish_reasons()), set(exchange.texts()), "the choices that got a finish reason "
                     "(every choice that got text)", exchange)

    def expect_usage_at_end(self, exchange: StreamedExchange) -> None:
        self.expect_openai_ending(exchange)
        last = exchange.events[-2].chunk()
        expect_true(last.get("choices") == [] and isinstance(last.get("usage"), dict), f"Expected the last piece "
                    f"before [DONE] to be the usage chunk (no choices, a usage), but it was {last}", exchange)
        reported = self.costs.backend_usage(exchange)
        expect_equal({k: last["usage"].get(k) for k in ("prompt_tokens", "completion_tokens")},
                     {k: reported[k] for k in ("prompt_tokens", "completion_tokens")},
                     "the usage at the end of the stream, against the backend's", exchange)

    def expect_nothing_streamed(self, exchange: StreamedExchange) -> None:
        expect_true(not exchange.is_event_stream and not exchange.events, f"Expected a plain refusal and no event, "
                    f"but got {len(exchange.events)} events as {exchange.response_headers.get('Content-Type')!r}",
                    exchange)

    def expect_from_backend(self, exchange: StreamedExchange, backend: str) -> None:
        self.expect_openai_ending(exchange)
        expect_equal(exchange.response_headers.get("X-Gateway-Backend"), backend, "the backend named in "
                     "X-Gateway-Backend", exchange)
        expect_true(bool(self.routing.calls_with_request_id(backend, exchange.request_id)), f"Expected the {backend} "
                    f"backend to have received request {exchange.request_id}, but it has no such call", exchange)

    def expect_error_after_pieces(self, exchange: StreamedExchange) -> None:
        self.expect_streamed(exchange)
        error = exchange.error_event()
        expect_true(error is not None and all(isinstance(error.get(k), str) for k in ("message", "type", "code")),
                    f"Expected the stream to end with an error event in OpenAI's shape ({{\"error\": {{\"message\", "
                    f"\"type\", \"code\"}}}}), but its last event was "
                    f"{exchange.events[-1].data if exchange.events else 'none'!r}", exchange)
        expect_true(len(exchange.content_events()) >= 1 and not exchange.ended_with_done,
                    f"Expected the pieces already written to arrive before the error, and no [DONE], but got "
                    f"{len(exchange.content_events())} pieces", exchange)

    # ---- what the backend did ---------------------------------------------------------------------------------------

    def expect_backend_stopped(self, backend: str, exchange: StreamedExchange) -> None:
        _, call = self.costs.backend_call(exchange)
        record = call["stream"]
        received = exchange.went_away_after or 0
        expect_true(record.get("client_went_away") and not record.get("finished"),
                    f"Expected the {backend} backend to see its client go away before it finished, but its record of "
                    f"the stream says {record}", exchange)
        expect_true(record["content_chunks_sent"] <= received + WRITTEN_AFTER_LEAVING,
                    f"Expected the {backend} backend to stop writing once the client had gone after {received} pieces "
                    f"(a few more may be on their way meanwhile), but it wrote {record['content_chunks_sent']}",
                    exchange)

    # ---- what the org paid ------------------------------------------------------------------------------------------

    def _charge(self, org: str, exchange: StreamedExchange) -> tuple[int, dict, dict, int]:
        """(what the org spent, the stream's settled hold, what the backend generated by its own count, that usage
        at the model's price), once the ledger holds one charge, for this request."""
        hold = self.costs.settled_hold(exchange)
        usage = self.costs.generated_usage(exchange)
        account = self.world.org(org).account_id
        finals = spend.entries(self.db, account, kind="finalize")
        expect_equal([e["request_id"] for e in finals], [exchange.request_id],
                     f"the request ids of the finalize entries in {org!r}'s ledger (one charge, for this request)",
                     exchange)
        return spend.books(self.db, account).spent, hold, usage, self.costs.cost(usage)

    def expect_charged_no_less_than_generated(self, org: str, exchange: StreamedExchange) -> None:
        """Never below the usage of what the backend generated, at the model's price; never above the hold."""
        spent, hold, usage, floor = self._charge(org, exchange)
        expect_true(floor <= spent <= hold["amount_micros"], f"Expected {org!r} to be charged no less than what its "
                    f"backend generated ({usage} at the model's price: {usd(floor)}) and no more than the hold "
                    f"({usd(hold['amount_micros'])}), but it was charged {usd(spent)}", exchange)

    def expect_charged_for_generated_only(self, org: str, exchange: StreamedExchange) -> None:
        """No less than what the backend generated up to the end of the stream, by its own count; no more than the
        most that text (and the prompt) can count as (their UTF-8 bytes): not the rest of the answer, which the
        hold was sized for."""
        spent, hold, usage, floor = self._charge(org, exchange)
        most = self.costs.cost(self.costs.generated_bytes(exchange))
        expect_true(floor <= spent <= most < hold["amount_micros"], f"Expected {org!r} to be charged for what its "
                    f"backend generated: no less than its usage ({usage} at the model's price: {usd(floor)}) and no "
                    f"more than the UTF-8 bytes of that text and of the prompt ({usd(most)}), well below the hold "
                    f"for the whole answer ({usd(hold['amount_micros'])}); but it was charged {usd(spent)}", exchange)

    def expect_holds_nothing(self, org: str, exchange: StreamedExchange) -> None:
        """Once the stream's hold is settled, nothing stays held on the org's account."""
        hold = self.costs.settled_hold(exchange)
        books = spend.books(self.db, self.world.org(org).account_id)
        expect_equal(books.held, 0, f"what is held on {org!r}'s account once the hold {hold['id']} of the stream "
                     f"was {hold['status']} ({books.describe()})", exchange)

    # ---- the audit log ----------------------------------------------------------------------------------------------

    def expect_audited_once(self, org: str, exchange: StreamedExchange, outcome: str) -> dict:
        """One chat.completion event for the request, with that outcome and the usage it was charged for."""
        self.costs.settled_hold(exchange)
        events = self.routing.platform.audit(org, request_id=exchange.request_id)
        expect_equal([(e.get("action"), e.get("outcome")) for e in events], [("chat.completion", outcome)],
                     f"the audit events of {org!r} for the streamed request (action, outcome)", exchange)
        usage = (events[0].get("details") or {}).get("usage")
        expect_true(isinstance(usage, dict) and all(isinstance(usage.get(k), int) for k in ("prompt_tokens",
                                                                                            "completion_tokens")),
                    f"Expected the audit event to carry the usage it was charged for, but its details were "
                    f"{events[0].get('details')}", exchange)
        return events[0]

