"""The hold's token bound, read from the request alone: every token-bearing field as UTF-8 bytes plus the overheads,
completions times `n`, the completion limit, content parts priced by the model's rule or refused; and the bound
is never below what the model stub (a backend with a tokenizer of its own) reports for the same request."""
from __future__ import annotations

import pytest

from gateway.errors import ApiError
from gateway.routers import chat
from gateway.services import token_bounds as bounds
from model_stub import tokens as stub_tokens

OVERHEAD = bounds.REPLY_OVERHEAD_TOKENS + bounds.MESSAGE_OVERHEAD_TOKENS  # one message
CJK = "漢" * 400  # 3 UTF-8 bytes each; the stub counts 500 tokens, a characters / 4 guess 100


def body(*messages, **extra) -> dict:
    return {"model": "m", "messages": list(messages), **extra}


def user(content, **fields) -> dict:
    return {"role": "user", "content": content, **fields}


def test_string_content_counts_its_utf8_bytes_plus_the_overheads():
    assert bounds.prompt_bound(body(user("Hello, gateway")), None, "m") == 14 + OVERHEAD
    assert bounds.prompt_bound(body(user(CJK)), None, "m") == 1200 + OVERHEAD


def test_every_message_and_every_field_but_the_role_counts():
    request = body({"role": "system", "content": "Be brief."}, user("hi", name="olive"),
                   {"role": "assistant", "content": None,
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "42"})
    calls = bounds.json_len(request["messages"][2]["tool_calls"])
    expected = (bounds.REPLY_OVERHEAD_TOKENS + 4 * bounds.MESSAGE_OVERHEAD_TOKENS
                + len("Be brief.") + len("hi") + len("olive") + calls + len("c1") + len("42"))
    assert bounds.prompt_bound(request, None, "m") == expected


def test_text_parts_tools_and_functions_count():
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    request = body(user([{"type": "text", "text": "héllo"}, {"type": "text", "text": "there"}]), tools=tools,
                   tool_choice="auto", functions=[{"name": "f"}])
    expected = (OVERHEAD + len("héllo".encode()) + 5 + bounds.json_len(tools) + len("auto")
                + bounds.json_len([{"name": "f"}]))
    assert bounds.prompt_bound(request, None, "m") == expected


def test_an_image_part_is_refused_naming_it_unless_the_model_prices_it():
    request = body(user("a"), user([{"type": "text", "text": "what is it?"},
                                    {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}}]))
    with pytest.raises(ApiError) as refused:
        bounds.prompt_bound(request, None, "vision")
    assert (refused.value.status, refused.value.param) == (400, "messages[1].content[1]")
    assert "image_url" in refused.value.message and "vision" in refused.value.message
    with pytest.raises(ApiError):
        bounds.prompt_bound(request, {"input_audio": 100}, "vision")  # a rule for another type does not count
    priced = bounds.prompt_bound(request, {"image_url": 85}, "vision")
    assert priced == bounds.REPLY_OVERHEAD_TOKENS + 2 * bounds.MESSAGE_OVERHEAD_TOKENS + 1 + 11 + 85


@pytest.mark.parametrize("content, param", [
    (42, "messages[0].content"), ([{"text": "no type"}], "messages[0].content[0]"),
    (["bare string"], "messages[0].content[0]"), ([{"type": "text", "text": 7}], "messages[0].content[0].text")])
def test_a_malformed_content_is_a_400_naming_the_field(content, param):
    with pytest.raises(ApiError) as refused:
        bounds.prompt_bound(body(user(content)), None, "m")
    assert (refused.value.status, refused.value.param) == (400, param)


def test_the_completion_limit_and_n():
    assert bounds.completion_limit({}, 256) == 256
    assert bounds.completion_limit({"max_tokens": 20}, 256) == 20
    assert bounds.completion_limit({"max_completion_tokens": 30}, 256) == 30
    assert bounds.completion_limit({"max_tokens": 20, "max_completion_tokens": 30}, 256) == 20  # the smaller
    assert bounds.choices({"n": 3}) == 3 and bounds.choices({}) == 1


def test_the_backends_are_sent_the_limit_the_hold_was_priced_at_and_always_asked_for_usage():
    assert chat.upstream_body({"messages": []}, 64)["max_tokens"] == 64
    only_new = chat.upstream_body({"max_completion_tokens": 9}, 64)
    assert "max_tokens" not in only_new and only_new["max_completion_tokens"] == 9
    both = chat.upstream_body({"max_tokens": 50, "max_completion_tokens": 9}, 64)
    assert (both["max_tokens"], both["max_completion_tokens"]) == (9, 9)
    streamed = chat.upstream_body({"stream": True, "max_tokens": 5}, 64)
    assert streamed["stream_options"] == {"include_usage": True}
    kept = chat.upstream_body({"stream": True, "stream_options": {"include_usage": False, "x": 1}}, 64)
    assert kept["stream_options"] == {"include_usage": True, "x": 1}


def test_generated_text_counts_content_refusals_and_calls_of_every_choice():
    answer = {"choices": [{"message": {"role": "assistant", "content": "Echo: 漢"}},
                          {"message": {"role": "assistant", "content": None, "refusal": "no",
                                       "tool_calls": [{"function": {"name": "f", "arguments": "{\"a\":1}"}}]}}]}
    assert bounds.answer_text_len(answer) == len("Echo: 漢".encode()) + 2 + 1 + 7
    chunk = {"choices": [{"index": 0, "delta": {"content": "Ech"}}, {"index": 1, "delta": {"role": "assistant"}}]}
    assert bounds.answer_text_len(chunk, "delta") == 3
    assert bounds.answer_text_len({"choices": "nope"}) == 0


REQUESTS = [
    body(user("Hello, gateway")),
    body(user(CJK)),
    body(user("Привет, как дела?"), n=3, max_completion_tokens=40),
    body({"role": "system", "content": "Réponds en français."}, user([{"type": "text", "text": "Bonjour"}]),
         name="x"),
    body(user([{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "u"}}])),
    body({"role": "assistant", "content": None, "name": "bot",
          "tool_calls": [{"id": "1", "type": "function", "function": {"name": "weather", "arguments": "{\"c\":\"Oslo\"}"}}]},
         user("and tomorrow? 明日"), tools=[{"type": "function", "function": {"name": "weather"}}],
         functions=[{"name": "legacy", "description": "ünïcode"}]),
]


@pytest.mark.parametrize("request_body", REQUESTS)
def test_the_bound_is_never_below_what_the_stub_backend_reports(request_body):
    prompt = bounds.prompt_bound(request_body, {"image_url": stub_tokens.IMAGE_PART_TOKENS}, "m")
    assert prompt >= stub_tokens.prompt_tokens(request_body)
