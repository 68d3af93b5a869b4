"""Budgets as a scenario sees them: bringing an org to its limit, a budget that affords exactly N completions,
and what the org's usage, its ledger and its audit log say afterwards."""
from __future__ import annotations

import re

from support.domain import model_routes as routing
from support.database import spend
from support.client.api import Exchange
from support.harness.assertions import expect_equal, expect_status, expect_true, problem_field
from support.stress.burst import burst
from support.harness.money import usd

# The request a burst sends, and the usage its backend reports for it: the suite knows each completion's price.
BURST_MAX_TOKENS = 5
BURST_USAGE = {"prompt_tokens": 4, "completion_tokens": BURST_MAX_TOKENS}


def set_budget(context, org: str, limit_micros: int) -> None:
    owner = context.platform.owner_of(org)
    expect_status(context.platform.set_budget(owner, org, limit_micros), 200,
                  f"{owner} setting the budget of {org!r} to {usd(limit_micros)}")
    context.budgets = getattr(context, "budgets", {})
    context.budgets[org] = limit_micros


def spend_whole_budget(context, key: str, org: str, model: str) -> None:
    """One answered completion, then the budget is set to exactly what the org has spent."""
    exchange = routing.ask(context, key, model)
    expect_status(exchange, 200, f"a first chat completion with the key {key!r}")
    spent = context.platform.usage(org).json()["spent_micros"]
    expect_true(spent > 0, f"Expected the first completion to cost something, but {org!r} has spent {spent}", exchange)
    set_budget(context, org, spent)


def afford(context, org: str, model: str, count: int) -> None:
    """The model's backend reports a known usage; the budget is that completion's price, `count` times."""
    for backend in context.routes[model].values():
        context.backends.behave(backend, "ok", usage=BURST_USAGE)
    context.completion_price = routing.cost(BURST_USAGE, *context.model_prices[model])
    set_budget(context, org, count * context.completion_price)


def fire(context, key: str, model: str, count: int) -> list[Exchange]:
    context.chat_model = model
    body = {"model": routing.model_name(context, model), "max_tokens": BURST_MAX_TOKENS,
            "messages": [{"role": "user", "content": routing.CONTENT}]}
    context.burst = burst(context.api, count, "POST", "/v1/chat/completions", token=context.world.key(key).secret,
                          json_body=body, title=f"{count} chat completions to {model!r}")
    return context.burst


def mentions_amount(message: str, micros: int) -> bool:
    """Whether a message states an amount exactly, in micro-USD or in dollars (14000, 0.014 USD, $0.014)."""
    dollars = usd(micros).removesuffix(" USD")
    candidates = {str(micros), f"{micros:,}", dollars}
    return any(re.search(r"(?<![\d.,])" + re.escape(c) + r"(?![\d,]|\.\d)", message) for c in candidates)


def expect_over_budget(context, org: str) -> None:
    exchange = context.response
    expect_status(exchange, 402, f"a chat completion from {org!r}, which is at its budget limit")
    expect_equal(problem_field(exchange, "code"), "budget_exceeded", "the error code", exchange)
    error = exchange.json().get("error") or {}
    expect_equal(error.get("type", problem_field(exchange, "type")), "budget_exceeded", "the error type", exchange)
    message = problem_field(exchange, "message") or ""
    record = context.world.org(org)
    expect_true(record.slug in message or org in message, f"Expected the message to name the org ({record.slug!r} "
                f"or {org!r}), but it said: {message!r}", exchange)
    usage = context.platform.usage(org).json()
    for what, amount in (("limit", usage["limit_micros"]), ("spend", usage["spent_micros"])):
        expect_true(mentions_amount(message, amount), f"Expected the message to state the {what} of {org!r} "
                    f"({usd(amount)}), but it said: {message!r}", exchange)


def expect_denial_audited(context, org: str) -> None:
    request_id = context.response.request_id
    events = context.platform.audit(org, request_id=request_id)
    denied = [e for e in events if e.get("outcome") == "denied" and e.get("request_id") == request_id]
    expect_true(bool(denied), f"Expected a denied audit event of {org!r} with request id {request_id}, but the "
                f"audit log held for it: {events}", context.response)


def expect_charged_once(context, org: str) -> None:
    """One finalize in the ledger, for this request, at exactly the completion's usage times the model's price."""
    exchange = context.response
    account_id = context.world.org(org).account_id
    finals = spend.entries(context.db, account_id, kind="finalize")
    expect_equal([e["request_id"] for e in finals], [exchange.request_id],
                 f"the request ids of the finalize entries in {org!r}'s ledger (one charge, for this request)",
                 exchange)
    usage = exchange.json()["usage"]
    expected = routing.cost(usage, *context.model_prices[context.chat_model])
    books = spend.books(context.db, account_id)
    expect_equal(books.spent, expected, f"what {org!r} has spent (usage {usage} at the model's price)", exchange)


def expect_nothing_spent(context, org: str) -> None:
    exchange = context.platform.usage(org)
    body = exchange.json()
    expect_equal((body["spent_micros"], body["held_micros"]), (0, 0), f"the spend and the holds of {org!r}", exchange)


def expect_hold_released(context, org: str) -> None:
    request_id = context.response.request_id
    reservation = spend.reservation_of_request(context.db, request_id)
    expect_true(reservation is not None, f"Expected the gateway to have placed a hold for request {request_id}, "
                f"but the database has no reservation for it", context.response)
    expect_equal(reservation["status"], "released", f"the status of the hold {reservation['id']} placed for the "
                 f"request", context.response)
    books = spend.books(context.db, context.world.org(org).account_id)
    expect_equal(books.held, 0, f"what is held on {org!r}'s account ({books.describe()})", context.response)


def expect_books_agree(context, org: str) -> None:
    usage = context.platform.usage(org)
    body = usage.json()
    books = spend.books(context.db, context.world.org(org).account_id)
    expect_equal((body["spent_micros"], body["held_micros"]), (books.postings.get("spent", 0),
                                                               books.postings.get("held", 0)),
                 f"the spend and holds of {org!r} by its usage, against its ledger postings ({books.describe()})",
                 usage)
    problems = books.disagreements()
    expect_true(not problems, f"Expected the account of {org!r} to agree with its ledger, but: {problems}", usage)


def expect_within_budget_after_burst(context, org: str) -> None:
    limit = context.budgets[org]
    books = spend.books(context.db, context.world.org(org).account_id)
    answered = [e for e in context.burst if e.status == 200]
    summary = (f"{len(answered)} of {len(context.burst)} answered; {books.describe()}; budget {limit} micro-USD")
    expect_true(books.spent + books.held <= limit, f"Expected {org!r} to stay within its budget of {usd(limit)}, but "
                f"it spent {usd(books.spent)} and holds {usd(books.held)} ({summary})")
    expect_equal(books.spent, len(answered) * context.completion_price,
                 f"what {org!r} spent: each answered completion charged its price once ({summary})")
    expect_true(answered, f"Expected some of the burst to be answered (the budget affords some), but none was "
                f"({summary})")
    expect_true(len(answered) < len(context.burst), f"Expected the budget to refuse part of the burst, but every "
                f"request was answered ({summary})")


def expect_refusals_over_budget(context) -> None:
    for exchange in context.burst:
        if exchange.status == 200:
            continue
        expect_true(exchange.status == 402 and problem_field(exchange, "code") == "budget_exceeded",
                    f"Expected every request of the burst that was not answered to be refused as over budget "
                    f"(402 budget_exceeded), but one got {exchange.status or exchange.error}", exchange)
