"""What the control API sets and reads: each namespace's behaviour and the calls it recorded."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import Any

MODES = ("ok", "error", "hang", "drop")
STREAM_USAGE = ("request", "always", "never")  # "request": a usage chunk when stream_options.include_usage
STREAM_FAULT_KINDS = ("error", "hang", "drop", "pause")
DEFAULT_ERROR_STATUS = 503
DEFAULT_MODELS = ("stub-model",)
DEFAULT_CHUNK_CHARS = 4
MAX_CHUNK_CHARS = 1_000_000
MAX_CALLS = 1000
MAX_NAMESPACES = 4096
MAX_LATENCY_MS = 300_000

_USAGE_KEYS = {"prompt_tokens", "completion_tokens", "total_tokens"}
_STREAM_FAULT_KEYS = {"after_chunks", "kind"}


class BehaviourError(ValueError):
    pass


def default_behaviour() -> dict[str, Any]:
    return {
        "mode": "ok",
        "status": DEFAULT_ERROR_STATUS,
        "body": None,
        "latency_ms": 0,
        "usage": None,
        "models": list(DEFAULT_MODELS),
        "chunk_chars": DEFAULT_CHUNK_CHARS,
        "chunk_delay_ms": 0,
        "stream_usage": "request",
        "stream_fault": None,
        "hold": 0,  # the next `hold` chat calls are held until released (counted down as they arrive)
    }


_BEHAVIOUR_KEYS = set(default_behaviour())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(data: dict, key: str, low: int, high: int) -> int:
    value = data[key]
    if not _is_int(value) or not low <= value <= high:
        raise BehaviourError(f"{key} must be an integer from {low} to {high}, got {value!r}")
    return value


def _one_of(data: dict, key: str, allowed: tuple[str, ...]) -> str:
    value = data[key]
    if value not in allowed:
        raise BehaviourError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _parse_usage(usage: Any) -> dict[str, int]:
    if not isinstance(usage, dict):
        raise BehaviourError("usage must be an object with prompt_tokens and completion_tokens")
    unknown = sorted(set(usage) - _USAGE_KEYS)
    if unknown:
        raise BehaviourError(f"unknown usage field(s) {', '.join(unknown)}")
    for key in ("prompt_tokens", "completion_tokens"):
        if key not in usage:
            raise BehaviourError(f"usage.{key} is required")
    for key, value in usage.items():
        if not _is_int(value) or value < 0:
            raise BehaviourError(f"usage.{key} must be a non-negative integer, got {value!r}")
    return {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "total_tokens": usage.get("total_tokens", usage["prompt_tokens"] + usage["completion_tokens"]),
    }


def _parse_stream_fault(fault: Any) -> dict[str, Any]:
    if not isinstance(fault, dict) or set(fault) != _STREAM_FAULT_KEYS:
        raise BehaviourError('stream_fault must be {"after_chunks": N, "kind": "error"|"hang"|"drop"|"pause"} or null')
    after_chunks = fault["after_chunks"]
    if not _is_int(after_chunks) or after_chunks < 0:
        raise BehaviourError(f"stream_fault.after_chunks must be a non-negative integer, got {after_chunks!r}")
    if fault["kind"] not in STREAM_FAULT_KINDS:
        raise BehaviourError(
            f"stream_fault.kind must be one of {', '.join(STREAM_FAULT_KINDS)}, got {fault['kind']!r}"
        )
    return {"after_chunks": after_chunks, "kind": fault["kind"]}


def parse_behaviour(data: Any) -> dict[str, Any]:
    """Validate a behaviour document; returns the stored (normalised) form."""
    if not isinstance(data, dict):
        raise BehaviourError("behaviour must be a JSON object")
    unknown = sorted(set(data) - _BEHAVIOUR_KEYS)
    if unknown:
        raise BehaviourError(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_BEHAVIOUR_KEYS))}"
        )
    out = default_behaviour()
    out.update({"mode": data.get("mode", "ok"), "body": data.get("body")})
    _one_of(out, "mode", MODES)
    if "status" in data:
        out["status"] = _int_in(data, "status", 400, 599)
    if "latency_ms" in data:
        out["latency_ms"] = _int_in(data, "latency_ms", 0, MAX_LATENCY_MS)
    if data.get("usage") is not None:
        out["usage"] = _parse_usage(data["usage"])
    if "models" in data:
        models = data["models"]
        if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
            raise BehaviourError("models must be a non-empty list of non-empty strings")
        out["models"] = list(models)
    if "chunk_chars" in data:
        out["chunk_chars"] = _int_in(data, "chunk_chars", 1, MAX_CHUNK_CHARS)
    if "chunk_delay_ms" in data:
        out["chunk_delay_ms"] = _int_in(data, "chunk_delay_ms", 0, MAX_LATENCY_MS)
    if "stream_usage" in data:
        out["stream_usage"] = _one_of(data, "stream_usage", STREAM_USAGE)
    if data.get("stream_fault") is not None:
        out["stream_fault"] = _parse_stream_fault(data["stream_fault"])
    if "hold" in data:
        out["hold"] = _int_in(data, "hold", 0, MAX_CALLS)
    return out


class Namespace:
    __slots__ = ("behaviour", "calls", "seq", "release", "waiting")

    def __init__(self) -> None:
        self.behaviour = default_behaviour()
        self.calls: deque[dict[str, Any]] = deque(maxlen=MAX_CALLS)
        self.seq = 0
        self.release = asyncio.Event()
        self.waiting = 0  # calls held, hanging or paused mid-stream on `release` now

    def wake_hangers(self) -> int:
        """Release the calls held, hanging or paused under the old behaviour; returns how many there were."""
        woken, self.waiting = self.waiting, 0
        self.release.set()
        self.release = asyncio.Event()
        return woken


class StubState:
    def __init__(self) -> None:
        self.namespaces: OrderedDict[str, Namespace] = OrderedDict()
        self.stopping = asyncio.Event()

    def get(self, name: str) -> Namespace:
        ns = self.namespaces.get(name)
        if ns is None:
            ns = self.namespaces[name] = Namespace()
            while len(self.namespaces) > MAX_NAMESPACES:
                _, evicted = self.namespaces.popitem(last=False)
                evicted.wake_hangers()
        else:
            self.namespaces.move_to_end(name)
        return ns

    def reset(self, name: str) -> None:
        ns = self.namespaces.pop(name, None)
        if ns is not None:
            ns.wake_hangers()

    def reset_all(self) -> None:
        for name in list(self.namespaces):
            self.reset(name)
