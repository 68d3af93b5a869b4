"""An existing deployment given by URL: nothing is started or stopped."""
from __future__ import annotations

from collections import deque
from pathlib import Path

import requests

from support.harness.config import SuiteSetupError
from support.stacks.base import Endpoints, Stack


PROBE_SECONDS = 3  # a deployment that is up answers its probes at once


def _why(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectionError) and "refused" in str(exc).lower():
        return "connection refused"
    if isinstance(exc, requests.Timeout):
        return f"no answer within {PROBE_SECONDS} s"
    return type(exc).__name__


class ExternalStack(Stack):
    name = "external"

    def up(self) -> Endpoints:
        base_url = self.config.base_url.rstrip("/")
        self._check_alive(base_url)
        self.wait_ready(base_url, self.config.ready_timeout)
        replicas = tuple(url.strip().rstrip("/") for url in (self.config.replica_urls or "").split(",") if url.strip())
        self.endpoints = Endpoints(base_url, self.config.database_url, self.config.keys_dir, self.config.stub_url,
                                   self.config.config_repo, self.config.backend_base_url, replicas)
        return self.endpoints

    def wait_ready(self, base_url: str, timeout: float, still_starting=lambda: None) -> None:
        """A deployment is expected to be up already: one look at /readyz fails at once when nothing (or not a
        gateway) answers; a gateway that says it is not ready (503) is polled until ready_timeout, and the timeout
        quotes its reason."""
        try:
            answer = requests.get(f"{base_url}/readyz", timeout=PROBE_SECONDS)
        except requests.RequestException as exc:
            raise SuiteSetupError(f"the gateway at {base_url} is down: /readyz gave no answer "
                                  f"({_why(exc)})") from None
        if answer.status_code == 503:
            super().wait_ready(base_url, timeout, still_starting)
        elif answer.status_code != 200:
            raise SuiteSetupError(f"{base_url}/readyz answered {answer.status_code}, not 200 or 503: is -D base_url "
                                  f"the gateway's address?")

    @staticmethod
    def _check_alive(base_url: str) -> None:
        try:
            requests.get(f"{base_url}/healthz", timeout=PROBE_SECONDS)
        except requests.RequestException as exc:
            raise SuiteSetupError(f"the gateway at {base_url} is down ({_why(exc)}): start it, or fix "
                                  f"-D base_url") from None

    def down(self) -> None:
        pass

    def logs(self, lines: int = 40) -> dict[str, list[str]]:
        """With -D logs_dir (a folder of <process>.log files, as scripts/stack and scripts/run-parallel pass for
        the stack they run), the last lines of each; otherwise nothing: a deployment's logs are not ours."""
        if not self.config.logs_dir:
            return {}
        tails = {}
        for path in sorted(Path(self.config.logs_dir).glob("*.log")):
            with open(path, errors="replace") as handle:
                tails[path.stem] = [line.rstrip("\n") for line in deque(handle, maxlen=lines)]
        return tails

    def state(self) -> dict[str, str]:
        try:
            status = requests.get(f"{self.config.base_url.rstrip('/')}/healthz", timeout=2).status_code
            return {"gateway": f"answering ({status})"}
        except requests.RequestException as exc:
            return {"gateway": f"not answering ({type(exc).__name__})"}
