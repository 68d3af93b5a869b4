"""The model stub counts what real backends count: non-ASCII text, content parts, names, tools and tool calls,
non-text parts, n choices and max_completion_tokens; and refuses malformed requests in OpenAI's error shape."""

from __future__ import annotations

import json

import pytest
from stub_helpers import chat, chat_body

from model_stub.tokens import cut_to_tokens, tokens

CJK_400 = "字" * 400


def quarter_tokens(text: str) -> int:
    """The token rule, written out: an ASCII character is a quarter token, any other five quarters."""
    quarters = sum(1 if ord(char) < 128 else 5 for char in text)
    return -(-quarters // 4)


def usage_of(client, ns, body: dict) -> dict:
    response = chat(client, ns, body)
    assert response.status_code == 200, response.text
    return response.json()["usage"]


@pytest.mark.parametrize("text", ["", "a", "abcd", "abcde", "héllo", "字", "字字字字", "🙂 ok", "Привет, мир", CJK_400])
def test_the_token_rule_never_exceeds_utf8_bytes(text):
    assert tokens(text) == quarter_tokens(text)
    assert tokens(text) <= len(text.encode("utf-8"))


@pytest.mark.parametrize("text, limit", [("Echo: " + "x" * 200, 16), ("Echo: " + CJK_400, 16), ("Echo: 字字", 2)])
def test_a_cut_reply_is_the_longest_prefix_within_the_limit(text, limit):
    cut = cut_to_tokens(text, limit)
    assert text.startswith(cut)
    assert tokens(cut) <= limit < tokens(text[:len(cut) + 1])


def test_400_cjk_characters_are_500_prompt_tokens(client, ns):
    data = chat(client, ns, chat_body(CJK_400)).json()
    content = data["choices"][0]["message"]["content"]
    assert data["usage"]["prompt_tokens"] == 500
    # 16 tokens are 64 quarters: "Echo: " is 6, then 11 characters of 5 quarters each (12 would be 66).
    assert content == "Echo: " + "字" * 11
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 16


def test_mixed_scripts_count_per_character(client, ns):
    usage = usage_of(client, ns, chat_body("héllo wörld", max_tokens=100))
    assert usage["prompt_tokens"] == quarter_tokens("héllo wörld") == 5
    assert usage["completion_tokens"] == quarter_tokens("Echo: héllo wörld") == 7


def test_text_parts_count_and_the_reply_joins_them(client, ns):
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "first part"}, {"type": "text", "text": "second"}]},
    ]
    data = chat(client, ns, {"model": "m", "messages": messages, "max_tokens": 50}).json()
    assert data["choices"][0]["message"]["content"] == "Echo: first part second"
    assert data["usage"]["prompt_tokens"] == quarter_tokens("Be brief.first partsecond")
    assert data["usage"]["completion_tokens"] == quarter_tokens("Echo: first part second")


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png", "detail": "high"}},
    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
])
def test_each_non_text_part_is_85_tokens(client, ns, part):
    content = [{"type": "text", "text": "what is this?"}, part, part]
    usage = usage_of(client, ns, {"model": "m", "messages": [{"role": "user", "content": content}]})
    assert usage["prompt_tokens"] == quarter_tokens("what is this?") + 2 * 85


def test_names_tools_and_tool_calls_count_each_as_a_field(client, ns):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Wetter für eine Stadt",
                                               "parameters": {"type": "object", "properties": {}}}}]
    functions = [{"name": "legacy_lookup", "parameters": {"type": "object"}}]
    messages = [
        {"role": "system", "content": "Use tools.", "name": "setup"},
        {"role": "user", "content": "Weather in Zürich?", "name": "olive"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city":"Zürich"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12 °C"},
        {"role": "assistant", "content": None, "function_call": {"name": "legacy_lookup", "arguments": "{}"}},
        {"role": "function", "name": "legacy_lookup", "content": "none"},
    ]
    body = {"model": "m", "messages": messages, "tools": tools, "functions": functions}
    canonical = {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False}
    expected = (quarter_tokens("Use tools.Weather in Zürich?12 °Cnone")
                + quarter_tokens("setupolivelegacy_lookup")
                + quarter_tokens('get_weather{"city":"Zürich"}legacy_lookup{}')
                + quarter_tokens(json.dumps(tools, **canonical))
                + quarter_tokens(json.dumps(functions, **canonical)))
    assert usage_of(client, ns, body)["prompt_tokens"] == expected


def test_n_choices_are_identical_and_each_is_billed(client, ns):
    data = chat(client, ns, chat_body("three of them", n=3)).json()
    assert [choice["index"] for choice in data["choices"]] == [0, 1, 2]
    assert {choice["message"]["content"] for choice in data["choices"]} == {"Echo: three of them"}
    assert {choice["finish_reason"] for choice in data["choices"]} == {"stop"}
    assert data["usage"]["completion_tokens"] == 3 * quarter_tokens("Echo: three of them")
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]


def test_n_choices_are_each_cut_to_the_limit(client, ns):
    data = chat(client, ns, chat_body("x" * 100, n=2, max_tokens=3)).json()
    assert [choice["message"]["content"] for choice in data["choices"]] == ["Echo: xxxxxx"] * 2
    assert [choice["finish_reason"] for choice in data["choices"]] == ["length"] * 2
    assert data["usage"]["completion_tokens"] == 6


@pytest.mark.parametrize("limits, completion_tokens", [
    ({"max_completion_tokens": 3, "max_tokens": 100}, 3),
    ({"max_completion_tokens": 100, "max_tokens": 3}, 13),
    ({"max_tokens": 5}, 5),
    ({}, 13),
])
def test_max_completion_tokens_comes_before_max_tokens(client, ns, limits, completion_tokens):
    usage = usage_of(client, ns, chat_body("y" * 44, **limits))  # "Echo: " + 44 characters is 13 tokens
    assert usage["completion_tokens"] == completion_tokens


@pytest.mark.parametrize("change, param", [
    ({"n": 0}, "n"),
    ({"n": 9}, "n"),
    ({"n": "2"}, "n"),
    ({"n": True}, "n"),
    ({"stream": "yes"}, "stream"),
    ({"stream": 1}, "stream"),
    ({"stream_options": "include_usage"}, "stream_options"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": {"type": "text", "text": "x"}}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": ["plain string"]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
])
def test_malformed_requests_are_400_naming_the_field(client, ns, change, param):
    response = chat(client, ns, {**chat_body(), **change})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_request", param)
    assert param.split("[")[0].split(".")[0] in error["message"]
