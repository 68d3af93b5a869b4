"""An existing deployment given by URL: nothing is started or stopped."""
from __future__ import annotations

import requests

from support.config import SuiteSetupError
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
                                   self.config.config_repo)
        return self.endpoints

    def down(self) -> None:
        pass

    def state(self) -> dict[str, str]:
        try:
            status = requests.get(f"{self.config.base_url.rstrip('/')}/healthz", timeout=2).status_code
            return {"gateway": f"answering ({status})"}
        except requests.RequestException as exc:
            return {"gateway": f"not answering ({type(exc).__name__})"}
