"""Declarative configuration from the suite's side: commit org and model files to the stack's config repository
as an operator would, trigger or await the gateway's reconciler, and read its status.

Parallel safety: a scenario only writes files named after its own namespaced orgs and models, commits through a
file lock (support.stacks.config_repo.commit), and judges convergence on its own objects:
- "applied" = the gateway's applied revision is the scenario's commit or a descendant of it (other scenarios'
  commits may land on top);
- "Synced at that commit" = applied, and the drift report and the error name none of the scenario's objects.
  The global status may be OutOfSync because of another scenario's drift, so it is not what a step asserts on.
In its cleanup a scenario removes every file it wrote in one final commit (prune is off, so the objects stay in
the gateway and are reported as removed from git: that is the documented prune-off behaviour)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from support.client.api import ApiClient, Exchange
from support.client.assertions import expect_status, expect_true
from support.tokens.signing_keys import KeyMaterial
from support.harness.money import usd
from support.harness.namespace import Namespace
from support.stacks import config_repo
from support.harness.waits import wait_until
from support.harness.world import Backend, World

DEFAULT_INTERVAL_SECONDS = 30.0
DEFAULT_PRICES = (1000, 2000)  # micro-USD per 1k prompt and completion tokens of a model declared in git

# Files that do not validate, each with the line the gateway must name. {name} is the org's display name.
BROKEN_FILES = {
    "broken YAML": ("name: {name}\nbudget_micros: 1000000\n  models: [chat-basic]\n", 3),
    "a negative budget": ("name: {name}\nbudget_micros: -5000000\n", 2),
    "an unknown setting": ("name: {name}\nbudget_micros: 1000000\nmonthly_budget: 5000000\n", 3),
}


@dataclass
class Status:
    """One reading of GET /admin/config/status."""
    exchange: Exchange

    @property
    def body(self) -> dict:
        return self.exchange.json()

    def describe(self) -> str:
        body = self.body
        return (f"status {body.get('status')}, last pass at {body.get('last_attempt_at')}, revision {str(body.get('revision'))[:12]}, target "
                f"{str(body.get('target_revision'))[:12]}, error {body.get('error')!r}, drift "
                f"{body.get('drift')} (request id {self.exchange.request_id})")


class Declarations:
    def __init__(self, repo: str | None, api: ApiClient, keys: KeyMaterial, ns: Namespace, world: World,
                 stub_url: str | None):
        if not repo:
            raise AssertionError("This step commits to the gateway's config repository, but the stack gives none: "
                                 "use the local stack or pass -D config_repo=PATH (tag the feature "
                                 "@needs_config_repo so it is skipped instead)")
        self.repo = Path(repo)
        self.api, self.keys, self.ns, self.world, self.stub_url = api, keys, ns, world, stub_url
        # The last sync or interval wait: (when it began, when it had dealt with the last commit, the status then),
        # on the monotonic clock: "within N seconds" counts from the trigger, a wait already spent included.
        self.triggered: tuple[float, float, Status] | None = None
        self.orgs: dict[str, dict] = {}  # business name -> the declared document
        self.written: set[str] = set()  # every path this scenario wrote
        self.broken: set[str] = set()  # paths holding a file that does not validate
        self.last_commit: str | None = None
        self.last_good_commit: str | None = None

    # ---- names ---------------------------------------------------------------------------------------------------

    def slug(self, org: str) -> str:
        return self.world.orgs[org].slug if org in self.world.orgs else self.ns.slug(org)

    def org_path(self, org: str) -> str:
        return f"orgs/{self.slug(org)}.yaml"

    def model_path(self, model: str) -> str:
        return f"models/{self.ns.name(model)}.yaml"

    def mine(self) -> set[tuple[str, str]]:
        """(kind, name) of the objects this scenario declares or declared."""
        objects = set()
        for path in self.written:
            folder, _, file_name = path.partition("/")
            objects.add(({"orgs": "org", "models": "model"}[folder], file_name.rsplit(".", 1)[0]))
        return objects

    # ---- commits -------------------------------------------------------------------------------------------------

    def commit(self, changes: dict[str, str | None], message: str, *, broken: set[str] = frozenset()) -> str:
        sha = config_repo.commit(self.repo, changes, f"{message} [{self.ns.prefix}]")
        self.written |= set(changes)
        self.broken = (self.broken - set(changes)) | set(broken)
        self.last_commit = sha
        if not self.broken:
            self.last_good_commit = sha
        return sha

    def _org_text(self, org: str) -> str:
        return yaml.safe_dump(self.orgs[org], sort_keys=False)

    def declare_org(self, org: str, budget_micros: int | None, *, self_heal: bool | None = None) -> str:
        doc = {"name": org, "budget_micros": budget_micros}
        if self_heal is not None:
            doc["sync_policy"] = {"self_heal": self_heal}
        self.orgs[org] = doc
        return self.commit({self.org_path(org): self._org_text(org)}, f"Declare {org} with a budget of "
                           f"{usd(budget_micros)}")

    def budget_change(self, org: str, budget_micros: int) -> dict[str, str]:
        doc = self.orgs.setdefault(org, {"name": org})
        doc["budget_micros"] = budget_micros
        return {self.org_path(org): self._org_text(org)}

    def commit_budget(self, org: str, budget_micros: int) -> str:
        return self.commit(self.budget_change(org, budget_micros), f"Set the budget of {org} to {usd(budget_micros)}")

    def commit_budget_with_broken_file(self, org: str, budget_micros: int, problem: str, broken_org: str) -> str:
        if problem not in BROKEN_FILES:
            raise AssertionError(f"The suite knows no broken file called {problem!r}; it knows: "
                                 f"{', '.join(BROKEN_FILES)}")
        text, _line = BROKEN_FILES[problem]
        path = self.org_path(broken_org)
        changes = {**self.budget_change(org, budget_micros), path: text.format(name=broken_org)}
        return self.commit(changes, f"Set the budget of {org} to {usd(budget_micros)}; declare {broken_org}",
                           broken={path})

    def broken_line(self, problem: str) -> int:
        return BROKEN_FILES[problem][1]

    def remove_org(self, org: str) -> str:
        self.orgs.pop(org, None)
        return self.commit({self.org_path(org): None}, f"Stop declaring {org}")

    def declare_model(self, model: str, backends: list[Backend], prices: tuple[int, int] = DEFAULT_PRICES) -> str:
        if self.stub_url is None:
            raise AssertionError("Declaring a model routed to the model stub needs the stub: pass -D stub_url=...")
        doc = {"price": {"prompt_per_1k_micros": prices[0], "completion_per_1k_micros": prices[1]},
               "backends": [{"name": b.name, "url": b.chat_url(self.stub_url)} for b in backends]}
        return self.commit({self.model_path(model): yaml.safe_dump(doc, sort_keys=False)},
                           f"Route {model} to {', '.join(b.name for b in backends)}")

    def cleanup(self) -> None:
        """One final commit removing every file this scenario wrote; a broken one is fixed for everyone at once."""
        present = sorted(p for p in self.written if (self.repo / p).exists())
        if not present:
            return
        was_broken = bool(self.broken)
        self.commit({p: None for p in present}, "Remove the scenario's declarations")
        if was_broken:
            self.sync()

    # ---- the gateway's side --------------------------------------------------------------------------------------

    def sync(self) -> Exchange:
        return expect_status(self.api.post("/admin/config/sync", token=self.keys.admin_token()), 200,
                             "a platform admin triggering a config sync")

    def status(self) -> Status:
        return Status(expect_status(self.api.get("/admin/config/status", token=self.keys.admin_token()), 200,
                                    "a platform admin reading the config status"))

    def reconcile_interval(self) -> float:
        text = config_repo.read_head(self.repo, "gateway.yaml")
        settings = (yaml.safe_load(text) if text else None) or {}
        return float(settings.get("reconcile_interval_seconds") or DEFAULT_INTERVAL_SECONDS)

    def applied(self, status: Status, commit: str) -> bool:
        return config_repo.is_ancestor(self.repo, commit, status.body.get("revision"))

    def seen(self, status: Status, commit: str) -> bool:
        return config_repo.is_ancestor(self.repo, commit, status.body.get("target_revision"))

    def my_drift(self, status: Status) -> list[dict]:
        mine = self.mine()
        return [d for d in status.body.get("drift") or [] if (d.get("kind"), d.get("name")) in mine]

    def names_mine(self, error: str | None) -> bool:
        return bool(error) and any(p in error for p in self.written)

    def synced(self, status: Status, commit: str) -> bool:
        return self.applied(status, commit) and not self.my_drift(status) and not self.names_mine(
            status.body.get("error"))

    def await_status(self, awaited: str, holds, timeout: float) -> Status:
        # Looked at every 50 ms: a pass comes every reconcile interval, and a slower look would add to each wait.
        return wait_until(awaited, self.status, holds, timeout=timeout, describe=Status.describe, max_interval=0.05)

    def await_commit(self, timeout: float, *, synced: bool) -> Status:
        """The scenario's last commit applied (synced=False) or Synced: applied, with no drift or error on this
        scenario's objects (synced=True), within `timeout` seconds of the sync or interval wait that was to apply
        it (of this call, when there was none)."""
        commit = self.last_commit
        if self.triggered is not None:
            began, dealt, status = self.triggered
            expect_true(dealt - began <= timeout, f"Expected the gateway to deal with commit {commit[:12]} within "
                        f"{timeout:g} s of the sync (or the interval) that was to apply it, but it took "
                        f"{dealt - began:.1f} s", status.exchange)
            timeout = max(0.0, began + timeout - time.monotonic())
        if synced:
            return self.await_status(f"the configuration to be Synced at commit {commit[:12]} (applied, with no "
                                     f"drift or error on this scenario's objects: {sorted(self.mine())})",
                                     lambda s: self.synced(s, commit), timeout=timeout)
        return self.await_status(f"the gateway to apply commit {commit[:12]}", lambda s: self.applied(s, commit),
                                 timeout=timeout)

    def settled(self, status: Status, commit: str) -> bool:
        """A pass has dealt with the commit: applied it, or rejected it because of a file of this scenario.

        (A commit that is valid but sits on top of another scenario's broken file waits until that is fixed.)"""
        return self.applied(status, commit) or (self.seen(status, commit) and self.names_mine(status.body.get("error")))

    def sync_and_settle(self, timeout: float = 15) -> Status:
        """POST /admin/config/sync, then make sure the scenario's last commit has been dealt with."""
        commit, began = self.last_commit, time.monotonic()
        status = Status(self.sync())
        if commit is not None and not self.settled(status, commit):
            status = self.await_status(f"the gateway to apply (or reject) commit {commit[:12]} after a sync",
                                       lambda s: self.settled(s, commit), timeout=timeout)
        self.triggered = (began, time.monotonic(), status)
        return status

    def await_interval_pass(self) -> Status:
        """Without triggering anything, wait for a reconcile pass that started after this call (by the gateway's
        `last_attempt_at`; the suite and the gateway share a clock on the local and compose stacks) and that has
        dealt with the scenario's last commit."""
        commit, since, began = self.last_commit, datetime.now(timezone.utc), time.monotonic()
        interval = self.reconcile_interval()

        def passed(status: Status) -> bool:
            started = status.body.get("last_attempt_at")
            return bool(started) and datetime.fromisoformat(started) >= since and self.settled(status, commit)

        status = self.await_status(f"a reconcile pass (every {interval:g} s) started after "
                                   f"{since.isoformat(timespec='milliseconds')} to apply (or reject) commit "
                                   f"{commit[:12]}", passed, timeout=2 * interval + 10)
        self.triggered = (began, time.monotonic(), status)
        return status

    def drift_entry(self, kind: str, name: str, field: str, timeout: float) -> tuple[dict, Status]:
        def entry(status: Status):
            return next((d for d in self.my_drift(status) if (d["kind"], d["name"], d["field"]) == (kind, name, field)),
                        None)

        status = self.await_status(f"the drift report to list the {kind} {name} field {field}",
                                   lambda s: entry(s) is not None, timeout=timeout)
        return entry(status), status
