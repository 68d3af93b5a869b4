"""Budgets as a scenario sees them: bringing an org to its limit, a budget that affords exactly N completions,
and what the org's usage, its ledger and its audit log say afterwards."""
from __future__ import annotations

import re

from support.client.api import Exchange, Request
from support.client.assertions import expect_equal, expect_status, expect_true, problem_field
from support.database import spend
from support.database.reflection import Database
from support.domain.model_routes import ModelRoutes
from support.domain.platform_api import CONTENT
from support.harness.money import usd

# The request a burst sends, and the usage its backend reports for it: the suite knows each completion's price.
BURST_MAX_TOKENS = 5
BURST_USAGE = {"prompt_tokens": 4, "completion_tokens": BURST_MAX_TOKENS}


def mentions_amount(message: str, micros: int) -> bool:
    """Whether a message states an amount exactly, in micro-USD or in dollars (14000, 0.014 USD, $0.014)."""
    dollars = usd(micros).removesuffix(" USD")
    candidates = {str(micros), f"{micros:,}", dollars}
    return any(re.search(r"(?<![\d.,])" + re.escape(c) + r"(?![\d,]|\.\d)", message) for c in candidates)


class Budgets:
    def __init__(self, routing: ModelRoutes, db: Database):
        self.routing, self.db = routing, db
        self.platform, self.world = routing.platform, routing.world

    def _account(self, org: str) -> str:
        return self.world.org(org).account_id

    # ---- setting budgets -------------------------------------------------------------------------------------------

    def set_budget(self, org: str, limit_micros: int) -> None:
        owner = self.platform.owner_of(org)
        expect_status(self.platform.set_budget(owner, org, limit_micros), 200,
                      f"{owner} setting the budget of {org!r} to {usd(limit_micros)}")
        self.world.budgets.limits[org] = limit_micros

    def spend_whole_budget(self, key: str, org: str, model: str) -> None:
        """One answered completion, then the budget is set to exactly what the org has spent."""
        exchange = expect_status(self.routing.ask(key, model), 200, f"a first chat completion with the key {key!r}")
        spent = self.platform.usage(org).json()["spent_micros"]
        expect_true(spent > 0, f"Expected the first completion to cost something, but {org!r} has spent {spent}",
                    exchange)
        self.set_budget(org, spent)

    def afford(self, org: str, model: str, count: int) -> None:
        """The model's backends report a known usage; the budget is that completion's price, `count` times."""
        for backend in self.world.model(model).backends:
            self.routing.behave(backend, "ok", usage=BURST_USAGE)
        self.world.budgets.completion_price = self.routing.cost(BURST_USAGE, model)
        self.set_budget(org, count * self.world.budgets.completion_price)

    def chat_request(self, key: str, model: str) -> Request:
        """The completion a burst sends (described, not sent); the model becomes the one being asked."""
        self.world.chat.model = model
        return Request("POST", "/v1/chat/completions", token=self.world.key(key).secret,
                       json_body={"model": self.routing.served_as(model), "max_tokens": BURST_MAX_TOKENS,
                                  "messages": [{"role": "user", "content": CONTENT}]})

    # ---- what an answer says ---------------------------------------------------------------------------------------

    def expect_over_budget(self, org: str, exchange: Exchange) -> None:
        expect_status(exchange, 402, f"a chat completion from {org!r}, which is at its budget limit")
        expect_equal(problem_field(exchange, "code"), "budget_exceeded", "the error code", exchange)
        error = exchange.json().get("error") or {}
        expect_equal(error.get("type", problem_field(exchange, "type")), "budget_exceeded", "the error type",
                     exchange)
        message = problem_field(exchange, "message") or ""
        record = self.world.org(org)
        expect_true(record.slug in message or org in message, f"Expected the message to name the org "
                    f"({record.slug!r} or {org!r}), but it said: {message!r}", exchange)
        usage = self.platform.usage(org).json()
        for what, amount in (("limit", usage["limit_micros"]), ("spend", usage["spent_micros"])):
            expect_true(mentions_amount(message, amount), f"Expected the message to state the {what} of {org!r} "
                        f"({usd(amount)}), but it said: {message!r}", exchange)

    def expect_denial_audited(self, org: str, exchange: Exchange) -> None:
        request_id = exchange.request_id
        events = self.platform.audit(org, request_id=request_id)
        denied = [e for e in events if e.get("outcome") == "denied" and e.get("request_id") == request_id]
        expect_true(bool(denied), f"Expected a denied audit event of {org!r} with request id {request_id}, but the "
                    f"audit log held for it: {events}", exchange)

    # ---- what the org's books say ----------------------------------------------------------------------------------

    def expect_charged_once(self, org: str, exchange: Exchange, usage: dict | None = None) -> None:
        """One finalize in the ledger, for this request, at exactly the completion's usage times the model's price
        (the usage in the answer, unless given: a stream's, read from its backend)."""
        finals = spend.entries(self.db, self._account(org), kind="finalize")
        expect_equal([e["request_id"] for e in finals], [exchange.request_id],
                     f"the request ids of the finalize entries in {org!r}'s ledger (one charge, for this request)",
                     exchange)
        usage = usage or exchange.json()["usage"]
        books = spend.books(self.db, self._account(org))
        expect_equal(books.spent, self.routing.cost(usage), f"what {org!r} has spent (usage {usage} at the model's "
                     f"price)", exchange)

    def expect_spent(self, org: str, amount: int, exchange: Exchange) -> None:
        expect_equal(spend.books(self.db, self._account(org)).spent, amount, f"what {org!r} has spent", exchange)

    def expect_nothing_spent(self, org: str) -> None:
        exchange = self.platform.usage(org)
        body = exchange.json()
        expect_equal((body["spent_micros"], body["held_micros"]), (0, 0), f"the spend and the holds of {org!r}",
                     exchange)

    def expect_hold_released(self, org: str, exchange: Exchange) -> None:
        request_id = exchange.request_id
        reservation = spend.reservation_of_request(self.db, request_id)
        expect_true(reservation is not None, f"Expected the gateway to have placed a hold for request {request_id}, "
                    f"but the database has no reservation for it", exchange)
        expect_equal(reservation["status"], "released", f"the status of the hold {reservation['id']} placed for the "
                     f"request", exchange)
        books = spend.books(self.db, self._account(org))
        expect_equal(books.held, 0, f"what is held on {org!r}'s account ({books.describe()})", exchange)

    def expect_books_agree(self, org: str) -> None:
        usage = self.platform.usage(org)
        body = usage.json()
        books = spend.books(self.db, self._account(org))
        expect_equal((body["spent_micros"], body["held_micros"]), (books.postings.get("spent", 0),
                                                                   books.postings.get("held", 0)),
                     f"the spend and holds of {org!r} by its usage, against its ledger postings ({books.describe()})",
                     usage)
        problems = books.disagreements()
        expect_true(not problems, f"Expected the account of {org!r} to agree with its ledger, but: {problems}", usage)

    # ---- a burst against the budget --------------------------------------------------------------------------------

    def expect_within_budget_after_burst(self, org: str, burst: list[Exchange]) -> None:
        limit = self.world.budgets.limits[org]
        price = self.world.budgets.completion_price
        books = spend.books(self.db, self._account(org))
        answered = [e for e in burst if e.status == 200]
        summary = f"{len(answered)} of {len(burst)} answered; {books.describe()}; budget {limit} micro-USD"
        expect_true(books.spent + books.held <= limit, f"Expected {org!r} to stay within its budget of {usd(limit)}, "
                    f"but it spent {usd(books.spent)} and holds {usd(books.held)} ({summary})")
        expect_equal(books.spent, len(answered) * price,
                     f"what {org!r} spent: each answered completion charged its price once ({summary})")

    def expect_burst_answered_as_afforded(self, org: str, burst: list[Exchange]) -> None:
        """At most as many answered as the budget affords at the price charged, and at least as many as their
        holds (each the request's worst case, read from the database) fit into the budget all at once: a budget
        that refuses while it still has room for them is as wrong as one that lets too many through."""
        limit, price = self.world.budgets.limits[org], self.world.budgets.completion_price
        holds = [hold["amount_micros"] for hold in (spend.reservation_of_request(self.db, e.request_id) for e in burst)
                 if hold is not None]
        answered = sum(e.status == 200 for e in burst)
        expect_true(bool(holds), f"Expected the gateway to have placed holds for the burst on {org!r}, but the "
                    f"database has none for its {len(burst)} request ids")
        fewest, most = limit // max(holds), limit // price
        refused = [e.request_id for e in burst if e.status != 200]
        expect_true(fewest <= answered <= most, f"Expected {org!r}, with a budget of {usd(limit)}, to answer between "
                    f"{fewest} (as many holds of up to {usd(max(holds))} as fit at once) and {most} (what it affords at "
                    f"{usd(price)} each) of the {len(burst)} requests of the burst, but it answered {answered} "
                    f"(refused: request ids {', '.join(refused[:5])}{', ...' if len(refused) > 5 else ''})")

    @staticmethod
    def expect_refusals_over_budget(burst: list[Exchange]) -> None:
        for exchange in burst:
            if exchange.status == 200:
                continue
            expect_true(exchange.status == 402 and problem_field(exchange, "code") == "budget_exceeded",
                        f"Expected every request of the burst that was not answered to be refused as over budget "
                        f"(402 budget_exceeded), but one got {exchange.status or exchange.error}", exchange)
