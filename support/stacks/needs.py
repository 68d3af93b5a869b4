"""What a scenario needs from its stack besides the gateway's HTTP API, named by a tag, and why it is skipped on a
stack that lacks it: the reason names the option to pass. The local and compose stacks offer everything but
several processes (@scale: -D gateway_workers, or the compose stack's replicas) and replicas to kill (compose); an
external one offers what its -D options give."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

from support.harness.config import SuiteConfig
from support.stacks.base import Endpoints


@dataclass(frozen=True)
class Need:
    what: str  # what the scenario needs, as the skip reason says it
    option: str  # how to give it
    offered: Callable[[Endpoints, SuiteConfig], bool]

    @property
    def reason(self) -> str:
        return f"needs {self.what}: pass {self.option}"


NEEDS = {
    "needs_database": Need("the gateway's database", "-D database_url=URL (the deployment's database)",
                           lambda endpoints, config: bool(endpoints.database_url)),
    "needs_config_repo": Need("the gateway's config repository on this machine",
                              "-D config_repo=PATH (a working copy of the repository the gateway reads)",
                              lambda endpoints, config: bool(endpoints.config_repo)),
    "needs_stub_control": Need("the model backend stub's control API",
                               "-D stub_url=URL (and -D backend_base_url=URL if the gateway reaches it elsewhere)",
                               lambda endpoints, config: bool(endpoints.stub_url)),
    "needs_logs": Need("the gateway's logs", "-D logs_dir=DIR (a folder of the stack's <process>.log files)",
                       lambda endpoints, config: config.stack != "external" or bool(config.logs_dir)),
    "scale": Need("several gateway processes", "-D gateway_workers=2 (with -D database_url=postgresql://...), or "
                  "-D stack=compose (2 replicas)", lambda endpoints, config: config.gateway_processes > 1),
    "needs_replica_control": Need("gateway replicas behind a load balancer that the suite may kill and restart",
                                  "-D stack=compose (2 replicas)",
                                  lambda endpoints, config: config.stack == "compose" and config.gateway_replicas > 1),
    # Circuit breakers are each gateway process's own (docs/contract.md): with several, a scenario that counts one
    # breaker's probes or changes cannot know which process it met.
    "needs_one_process": Need("one gateway process (what it checks is kept in each process)",
                              "-D gateway_workers=1 on the local stack",
                              lambda endpoints, config: config.gateway_processes == 1),
}


def missing(tags, endpoints: Endpoints, config: SuiteConfig) -> str | None:
    """The skip reason of a scenario with these tags on this stack, or None when the stack offers what it needs."""
    for tag in sorted(set(tags) & NEEDS.keys()):
        if not NEEDS[tag].offered(endpoints, config):
            return NEEDS[tag].reason
    return None


def skip_summary(scenarios) -> str | None:
    """One line for the end of the run: how many scenarios were skipped for what the stack lacks, by need."""
    reasons = {need.reason: need for need in NEEDS.values()}
    counted = Counter(reasons[s.skip_reason] for s in scenarios if getattr(s, "skip_reason", None) in reasons)
    if not counted:
        return None
    total = sum(counted.values())
    parts = [f"{n} need{'s' if n == 1 else ''} {need.what} ({need.option.split(' (')[0]})"
             for need, n in counted.most_common()]
    return f"{total} scenario{'s' if total != 1 else ''} skipped: {', '.join(parts)}"
