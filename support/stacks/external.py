"""An existing deployment given by URL: nothing is started or stopped."""
from __future__ import annotations

from collections import deque
from pathlib import Path

import requests

from support.harness.config import SuiteSetupError
from support.stacks.base import Endpoints, Stack


class ExternalStack(Stack):
    name = "external"

    def up(self) -> Endpoints:
        base_url = self.config.base_url.rstrip("/")
        try:
            requests.get(f"{base_url}/healthz", timeout=5)
        except requests.RequestException as exc:
            raise SuiteSetupError(f"cannot reach the gateway at {base_url} ({type(exc).__name__}); start it or fix "
                                  f"-D base_url") from None
        self.wait_ready(base_url, self.config.ready_timeout)
        self.endpoints = Endpoints(base_url, self.config.database_url, self.config.keys_dir, self.config.stub_url,
                                   self.config.config_repo, self.config.backend_base_url)
        return self.endpoints

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
