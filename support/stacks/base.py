"""What every stack backend offers the suite: bring it up, say where it is, show its logs, take it down."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import requests

from support.harness.config import SuiteConfig, SuiteSetupError
from support.harness.waits import WaitTimeout, wait_until


# Gateway settings for stacks the suite starts: short timers so waits are short, a cheaper password hash so
# logins are fast (test mode: the gateway refuses it otherwise), and a SQLite busy timeout that turns a locked
# database into a quick 503. The suite's own address is a trusted proxy, so a security scenario can play a client
# address of its own (X-Forwarded-For) and its throttles and floods touch no other scenario; refusals without
# credentials are audited one by one up to a budget above what the rest of the suite sends. The settlement journal
# retries soon and gives up after a few refusals, so a settlement that cannot apply becomes a dead letter in a second;
# the reservation counts in /metrics are at most 0.2 s old.
GATEWAY_TEST_SETTINGS = {
    "UPSTREAM_TIMEOUT_SECONDS": "2",
    "UPSTREAM_CONNECT_TIMEOUT_SECONDS": "0.25",  # the stub is on loopback; a chat hold's lifetime counts it per backend
    "RECONCILE_INTERVAL_SECONDS": "1",
    "EXPIRY_SWEEP_SECONDS": "0.1",
    # A crashed request's hold returns half a second after its backends' time-outs: what a request does after its
    # backend answered (settling its charge) takes milliseconds, ~0.1 s on a loaded machine.
    "RESERVATION_MARGIN_SECONDS": "0.5",
    "GATEWAY_MODE": "test",
    "PASSWORD_HASH_COST": "4",  # a person joining and logging in costs a fraction of a millisecond
    # A SQLite file locked by another process (the outage) is a 503 within 250 ms: the suite's own writes hold it
    # for at most ~12 ms. The process's own writers queue in turn for up to a second (under load: ~130 ms).
    "DATABASE_BUSY_TIMEOUT_MS": "250",
    "DATABASE_WRITE_TURN_TIMEOUT_MS": "1000",
    "TRUSTED_PROXIES": "127.0.0.0/8,::1,172.16.0.0/12,192.168.0.0/16",
    "SERVICE_TOKEN_ISSUERS": "acceptance-suite",
    # A flood's summaries are written (and awaited) within half a second. A window's budget must hold the rest of the
    # suite's refusals, which come in one scenario's bursts, not at a rate: at most 19 from the suite's address and 42
    # from all addresses in any half second of a sequential run. The floods outgrow it while the gateway refuses more
    # than ~210 a second (support/stress/floods.py); a shorter window would need nearly the same budget.
    "AUDIT_SAMPLING_WINDOW_SECONDS": "0.5",
    "AUDIT_UNAUTHENTICATED_PER_ADDRESS": "30",
    "AUDIT_UNAUTHENTICATED_PER_WINDOW": "60",
    "METRICS_REFRESH_SECONDS": "0.2",
    "SETTLEMENT_RETRY_SECONDS": "0.02",
    "SETTLEMENT_RETRY_MAX_SECONDS": "0.5",
    "SETTLEMENT_MAX_TRIES": "3",
    "LEADER_RETRY_SECONDS": "0.5",  # a dead leader's work is taken over within half a second
}


@dataclass(frozen=True)
class Endpoints:
    base_url: str
    database_url: str | None
    keys_dir: str | None
    stub_url: str | None  # the model backend stub's control address, when the stack has one
    config_repo: str | None  # a git repository the gateway reconciles from, when the suite may commit to it
    # The stub as the GATEWAY reaches it, which model backend URLs are built from: on the compose stack the
    # gateway's container knows it by service name, not by the port published to the suite. None: the same as stub_url.
    backend_base_url: str | None = None
    # Each gateway replica's own address, when the stack runs replicas behind a load balancer (compose): the
    # deployment's metrics are read from each (support.client.deployment_metrics). Empty: base_url says it all.
    replica_urls: tuple[str, ...] = ()


class Stack(ABC):
    name = "stack"
    # Whether the stack keeps a warm gateway ready for the restarts its fault scenarios ask for (the embedded stack
    # does); off for a stack started on its own and used as `external` (run-parallel's shared one, scripts/stack).
    warm_restarts = True

    def __init__(self, config: SuiteConfig):
        self.config = config
        self.endpoints: Endpoints | None = None

    def launch(self) -> None:
        """Start what up() will wait for, without waiting (a stack that starts nothing of its own does nothing)."""

    @abstractmethod
    def up(self) -> Endpoints: ...

    @abstractmethod
    def down(self) -> None: ...

    @property
    def outlives_the_run(self) -> bool:
        """Whether what a run makes on this stack outlives it, so is worth retiring at the end: not on the local
        stack, whose database goes with it (a temp folder removed, a fresh PostgreSQL database dropped), unless
        -D keep_stack=true keeps it to look at."""
        return self.name != "local" or self.config.keep_stack

    def logs(self, lines: int = 40) -> dict[str, list[str]]:
        """The last lines of each process's log, by process name."""
        return {}

    def state(self) -> dict[str, str]:
        """Each process and whether it is up."""
        return {}

    def last_words(self, lines: int = 15) -> str:
        """The gateway's last log lines and the processes' state, for failure messages."""
        parts = [f" Stack state: {', '.join(f'{k} {v}' for k, v in self.state().items()) or 'unknown'}."]
        gateway_lines = self.logs(lines).get("gateway") or []
        if gateway_lines:
            parts.append(" The gateway's last log lines:\n  " + "\n  ".join(gateway_lines[-lines:]))
        return "".join(parts)

    def wait_ready(self, base_url: str, timeout: float, still_starting=lambda: None) -> None:
        """Poll /readyz until it answers 200; on timeout, quote what it last said and the gateway's log."""

        def probe():
            still_starting()
            try:
                response = requests.get(f"{base_url}/readyz", timeout=2)
                return f"{response.status_code} {response.text[:200]}"
            except requests.RequestException as exc:
                return f"no answer ({type(exc).__name__})"

        try:
            # A short interval: every run waits here, and a late look would add to each cold start.
            wait_until(f"{base_url}/readyz to answer 200", probe, lambda seen: seen.startswith("200"),
                       timeout=timeout, describe=str, max_interval=0.05)
        except WaitTimeout as exc:
            raise SuiteSetupError(f"{exc}.{self.last_words()}") from None
