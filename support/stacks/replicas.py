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


def wait_every_process(base_url: str, processes: int, timeout: float, *, path: str = "/healthz",
                       awaited: str | None = None) -> None:
    """Ask `path` on a new connection each time (so each may land on another process or replica) until `processes`
    distinct gateway processes have answered 200, none of them failing since; raises WaitTimeout saying who did."""
    ready: set[str] = set()
    last = {"seen": "nothing yet"}

    def probe() -> int:
        try:
            answer = requests.get(f"{base_url.rstrip('/')}{path}", timeout=5, headers={"Connection": "close"})
            process = answer.headers.get(PROCESS_HEADER) or "a gateway process not naming itself"
            (ready.add if answer.status_code == 200 else ready.discard)(process)
            last["seen"] = f"{process} answered {answer.status_code}"
        except requests.RequestException as exc:
            last["seen"] = f"no answer ({type(exc).__name__})"
        return len(ready)

    wait_until(awaited or f"all {processes} gateway processes at {base_url} to answer {path}", probe,
               lambda count: count >= processes, timeout=timeout, max_interval=0.05,
               describe=lambda count: f"{count} answered ({sorted(ready)}); last: {last['seen']}")


def wait_balanced(base_url: str, processes: int, timeout: float) -> None:
    """Until `processes` distinct gateway processes have answered through the load balancer (or the workers'
    sockets): a set-up step, so a time-out is a set-up problem."""
    try:
        wait_every_process(base_url, processes, timeout,
                           awaited=f"the load balancer at {base_url} to send requests to all {processes} gateway "
                                   f"processes")
    except WaitTimeout as exc:
        raise SuiteSetupError(str(exc)) from None
