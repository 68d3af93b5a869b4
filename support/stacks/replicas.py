"""Gateway replicas behind a load balancer: waiting until it sends requests to every one of them.

A replica that answers /readyz on its own port may not be in the load balancer's rotation yet (HAProxy marks a
server up after its checks pass twice). The suite waits until answers through the load balancer have come from
every gateway process (the X-Gateway-Process header of a gateway in test mode), so the first scenario already
meets them all."""
from __future__ import annotations

import requests

from support.harness.config import SuiteSetupError
from support.harness.waits import WaitTimeout, wait_until

PROCESS_HEADER = "X-Gateway-Process"


def wait_balanced(base_url: str, processes: int, timeout: float) -> None:
    """Probe /healthz through the load balancer, a new connection each time, until `processes` distinct gateway
    processes have answered."""
    seen: set[str] = set()

    def probe() -> set[str]:
        try:
            with requests.Session() as session:
                answer = session.get(f"{base_url}/healthz", timeout=2)
            if answer.headers.get(PROCESS_HEADER):
                seen.add(answer.headers[PROCESS_HEADER])
        except requests.RequestException:
            pass
        return seen

    try:
        wait_until(f"the load balancer at {base_url} to send requests to all {processes} gateway processes", probe,
                   lambda found: len(found) >= processes, timeout=timeout, describe=lambda found: f"answers from "
                   f"{sorted(found) or 'none'}", max_interval=0.1)
    except WaitTimeout as exc:
        raise SuiteSetupError(str(exc)) from None
