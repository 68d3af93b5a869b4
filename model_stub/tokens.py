"""The stub's token rule: the "tokenizer" of this backend.

``tokens(text) = ceil(ascii_chars / 4 + non_ascii_chars * 5 / 4)``. A real BPE token is at least one UTF-8 byte,
and this rule never exceeds a text's UTF-8 byte count (an ASCII character is one byte, any other at least two),
so a gateway that bounds a request by its UTF-8 bytes is always above what the stub reports.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

IMAGE_PART_TOKENS = 85  # each non-text content part (image_url, input_audio, ...), like a low-detail image


def tokens(text: str) -> int:
    if text.isascii():
        return (len(text) + 3) // 4
    non_ascii = sum(1 for char in text if ord(char) > 127)
    return (len(text) - non_ascii + 5 * non_ascii + 3) // 4


def _quarters(char: str) -> int:
    return 1 if ord(char) < 128 else 5


def cut_to_tokens(text: str, limit: int) -> str:
    """The longest prefix of ``text`` that is at most ``limit`` tokens (for ASCII: ``limit * 4`` characters)."""
    budget = 4 * limit
    for index, char in enumerate(text):
        budget -= _quarters(char)
        if budget < 0:
            return text[:index]
    return text


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def text_parts(content: Any) -> list[str]:
    """The texts of a message's content: the string itself, or the ``text`` of each text part."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [part["text"] for part in content if part.get("type") == "text"]
    return []


def _non_text_parts(content: Any) -> int:
    return sum(1 for part in content if part.get("type") != "text") if isinstance(content, list) else 0


def _function_calls(message: dict) -> Iterator[dict]:
    """The ``function`` objects of an assistant's ``tool_calls`` and its legacy ``function_call``."""
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                yield call["function"]
    if isinstance(message.get("function_call"), dict):
        yield message["function_call"]


def prompt_tokens(body: dict) -> int:
    """Tokens of every token-bearing field, each field's texts concatenated and counted (rounded up) on its own.

    The fields: message contents (strings and text parts), message names, tool calls (function names and
    arguments), ``tools`` and ``functions`` (canonical JSON); plus IMAGE_PART_TOKENS per non-text part.
    """
    contents: list[str] = []
    names: list[str] = []
    calls: list[str] = []
    non_text = 0
    for message in body["messages"]:
        if not isinstance(message, dict):
            continue
        contents += text_parts(message.get("content"))
        non_text += _non_text_parts(message.get("content"))
        if isinstance(message.get("name"), str):
            names.append(message["name"])
        for function in _function_calls(message):
            calls += [value for value in (function.get("name"), function.get("arguments")) if isinstance(value, str)]
    fields = ["".join(contents), "".join(names), "".join(calls)]
    fields += [canonical_json(body[key]) for key in ("tools", "functions") if body.get(key) is not None]
    return sum(tokens(field) for field in fields) + non_text * IMAGE_PART_TOKENS
