"""Chat requests of the shapes applications send, as data: other scripts, content in parts, tool definitions and
tool calls, several completions, the newer completion limit, an image; a mixed burst of them against a budget.
And what the gateway held for each, against what its backend reported."""
from __future__ import annotations

from itertools import cycle, islice

from support.client.api import Exchange, Request
from support.client.assertions import expect_equal, expect_status, expect_true, problem_field
from support.database import spend
from support.domain.budgets import BURST_MAX_TOKENS
from support.domain.model_routes import ModelRoutes
from support.domain.platform_api import CONTENT
from support.harness.money import usd

CHINESE_QUESTION = ("请用简单的话解释一下网关在应用和模型之间做什么，" * 20)[:400]  # 400 characters
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city, in degrees Celsius.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city's name"}},
                   "required": ["city"]}}}
TOOL_CALL_CONVERSATION = [
    {"role": "system", "content": "You answer questions about the weather."},
    {"role": "user", "content": "What is the weather in Lisbon?"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": "{\"city\": \"Lisbon\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"celsius\": 21, \"sky\": \"clear\"}"},
    {"role": "user", "content": "So, do I need a coat?"},
]
IMAGE_PART = {"type": "image_url", "image_url": {"url": "https://example.test/cat.png", "detail": "low"}}


def _user(content) -> list[dict]:
    return [{"role": "user", "content": content}]


# The sentence's words -> the request's fields besides `model` (max_tokens 32 unless the shape sets a limit).
SHAPES: dict[str, dict] = {
    "a question of 400 Chinese characters": {"messages": _user(CHINESE_QUESTION), "max_tokens": 32},
    "its content in several text parts": {"messages": _user([
        {"type": "text", "text": "Hello, gateway."}, {"type": "text", "text": "Please answer in parts."},
        {"type": "text", "text": "¿Me entiendes?"}]), "max_tokens": 32},
    "tool definitions": {"messages": _user("What is the weather in Lisbon?"), "tools": [WEATHER_TOOL],
                         "tool_choice": "auto", "max_tokens": 32},
    "a conversation with a tool call": {"messages": TOOL_CALL_CONVERSATION, "tools": [WEATHER_TOOL],
                                        "max_tokens": 32},
    "three completions": {"messages": _user(CONTENT), "n": 3, "max_tokens": 32},
    "a limit on completion tokens": {"messages": _user("Please repeat this sentence back to me, word for word."),
                                     "max_completion_tokens": 6},
    "an image": {"messages": _user([{"type": "text", "text": "What is in this picture?"}, IMAGE_PART]),
                 "max_tokens": 32},
}
IMAGE_PARAM = "messages[0].content[1]"  # where the image part is in its request

# A burst of mixed shapes: each small enough that a few holds fit in a budget of ten plain completions, so the
# requests race for the same room.
BURST_SHAPES: list[dict] = [
    {"messages": _user(CONTENT)},
    {"messages": _user("你好，网关。")},
    {"messages": _user([{"type": "text", "text": "Hello,"}, {"type": "text", "text": " gateway"}])},
    {"messages": _user("Now?"), "tools": [{"type": "function", "function": {"name": "now"}}]},
    {"messages": _user(CONTENT), "n": 2},
    {"messages": _user(CONTENT), "max_completion_tokens": BURST_MAX_TOKENS},
]


class RequestShapes:
    def __init__(self, routing: ModelRoutes):
        self.routing, self.world, self.db = routing, routing.world, routing.db

    def body(self, model: str, shape: str) -> dict:
        if shape not in SHAPES:
            raise AssertionError(f"The suite knows no request with {shape!r}; it knows: {', '.join(SHAPES)}")
        return {"model": self.routing.served_as(model), **SHAPES[shape]}

    def ask(self, key: str, model: str, shape: str) -> Exchange:
        self.routing.note_calls_before(model)
        return self.routing.api.post("/v1/chat/completions", token=self.world.key(key).secret,
                                     json_body=self.body(model, shape))

    def mixed_burst(self, key: str, model: str, count: int) -> list[Request]:
        """`count` requests cycling through the burst's shapes (each holding at most BURST_MAX_TOKENS a choice)."""
        self.routing.note_calls_before(model)
        served, secret = self.routing.served_as(model), self.world.key(key).secret
        return [Request("POST", "/v1/chat/completions", token=secret,
                        json_body={"model": served, **({"max_tokens": BURST_MAX_TOKENS} | shape)})
                for shape in islice(cycle(BURST_SHAPES), count)]

    # ---- what was held ----------------------------------------------------------------------------------------------

    def expect_hold_covered(self, exchange: Exchange) -> None:
        expect_status(exchange, 200, "the chat completion")
        usage = exchange.json()["usage"]
        cost = self.routing.cost(usage)
        hold = spend.reservation_of_request(self.db, exchange.request_id)
        expect_true(hold is not None, f"Expected a hold placed for request {exchange.request_id}, but the database "
                    f"has no reservation for it", exchange)
        expect_true(hold["amount_micros"] >= cost, f"Expected the hold for request {exchange.request_id} to cover "
                    f"the usage its backend reported ({usage}: {usd(cost)} at the model's price), but it held "
                    f"{usd(hold['amount_micros'])}", exchange)

    def expect_overrun_recorded(self, org: str, exchange: Exchange) -> None:
        """The reservation was charged beyond its amount and says so; the audit event of the request says so too."""
        hold = spend.reservation_of_request(self.db, exchange.request_id)
        expect_true(hold is not None and (hold["actual_micros"] or 0) > hold["amount_micros"],
                    f"Expected the reservation of request {exchange.request_id} to have been charged beyond its "
                    f"amount, but it was {hold}", exchange)
        overrun = hold["actual_micros"] - hold["amount_micros"]
        expect_equal(hold.get("overrun_micros"), overrun, f"the overrun marked on reservation {hold['id']} (charged "
                     f"{usd(hold['actual_micros'])} on a hold of {usd(hold['amount_micros'])})", exchange)
        events = self.routing.platform.audit(org, request_id=exchange.request_id)
        said = [e for e in events if "overrun" in f"{e.get('reason')} {e.get('details')}".lower()]
        expect_true(len(events) == 1 and said, f"Expected one audit event of {org!r} for request "
                    f"{exchange.request_id} that records the overrun, but found: {events}", exchange)

    def expect_image_refused(self, exchange: Exchange) -> None:
        expect_status(exchange, 400, "a chat completion with an image the model has no price for")
        param, message = problem_field(exchange, "param"), problem_field(exchange, "message") or ""
        expect_true(param == IMAGE_PARAM or IMAGE_PARAM in message, f"Expected the refusal to name the image part "
                    f"({IMAGE_PARAM}), but its param was {param!r} and its message {message!r}", exchange)
