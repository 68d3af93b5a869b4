"""The model backend stub's control API: make a backend healthy, failing, slow or hung, and read what it saw.

Each scenario uses its own stub namespaces, so one stub process serves every scenario in parallel."""
from __future__ import annotations

import requests

from support.harness.world import Backend

UNREACHABLE_URL = "http://127.0.0.1:9/v1/chat/completions"  # the discard port: nothing listens, connections fail


class ModelBackends:
    def __init__(self, stub_url: str | None, backend_base_url: str | None = None):
        self.stub_url = stub_url.rstrip("/") if stub_url else None  # where the suite controls the stub
        # Where the gateway reaches the stub, which backend URLs (Backend.chat_url) are built from: differs on the
        # compose stack (service name inside the network vs. port published to the suite).
        self.backend_base_url = backend_base_url.rstrip("/") if backend_base_url else self.stub_url

    def _require(self) -> str:
        if self.stub_url is None:
            raise AssertionError("This step controls the model backend stub, but the stack has none: pass "
                                 "-D stub_url=... for an external stack.")
        return self.stub_url

    def behave(self, backend: Backend, mode: str, **settings) -> None:
        response = requests.put(f"{self._require()}/_stub/{backend.namespace}/behaviour",
                                json={"mode": mode, **settings}, timeout=5)
        if response.status_code != 200:
            raise AssertionError(f"The model stub refused behaviour {mode!r} for {backend.name}: "
                                 f"{response.status_code} {response.text[:300]}")

    def behaviour(self, backend: Backend) -> dict:
        response = requests.get(f"{self._require()}/_stub/{backend.namespace}/behaviour", timeout=5)
        response.raise_for_status()
        return response.json()

    def calls(self, backend: Backend) -> list[dict]:
        response = requests.get(f"{self._require()}/_stub/{backend.namespace}/calls", timeout=5)
        response.raise_for_status()
        return response.json()["calls"]

    def release(self, backend: Backend) -> int:
        """Let go of the calls the backend holds, hangs or has paused mid-stream now; returns how many."""
        response = requests.post(f"{self._require()}/_stub/{backend.namespace}/release", timeout=5)
        response.raise_for_status()
        return response.json()["released"]

    def reset(self, backend: Backend) -> None:
        if self.stub_url is not None:
            requests.delete(f"{self.stub_url}/_stub/{backend.namespace}", timeout=5)


__all__ = ["UNREACHABLE_URL", "Backend", "ModelBackends"]
