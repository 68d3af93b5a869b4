"""The run and the scenario: the only two things the suite hangs on behave's `context`.

To add a step: read what it needs from `state.world` (orgs, people, keys, models, accounts, the last answer...),
call a service on the state (`state.platform`, `state.routing`, `state.billing`, ...), and store what a later
step needs into a typed field of `state.world` (`state.world.last.answer` for the answer a When got back; add a
field to support/harness/world.py for anything new). A Then asserts with support.client.assertions, whose
messages quote what was expected, what came back and the request id. A step never sets anything on `context`.

    @when('the key "{key}" asks "{model}" for a chat completion')
    def key_asks_model(context, key, model):
        state = context.state
        state.world.last.answer = state.routing.ask(key, model)

* `SuiteRun` (`context.suite_run`, made in before_all): the configuration, the stack and its endpoints, the
  signing key material, the database and the model backend stub's control client. One per run.
* `ScenarioState` (`context.state`, made in before_scenario): the scenario's namespace, its API client, its world
  and its domain services, each built on first use (functools.cached_property) from what it needs.
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Callable

from support.client import evidence
from support.client import deployment_metrics
from support.client.api import ApiClient, Exchange, Request
from support.database.reflection import Database
from support.domain.audit_trail import AuditTrail
from support.domain.billing_api import Billing
from support.domain.budgets import Budgets
from support.domain.chat_retries import ChatRetries
from support.domain.cleanup import Retirement
from support.domain.declarations import Declarations
from support.domain.identity import Identity, Rotation
from support.domain.log_secrets import SecretsSeen
from support.domain.model_backends import ModelBackends
from support.domain.model_routes import ModelRoutes
from support.domain.org_ledgers import OrgLedgers
from support.domain.platform_api import Platform
from support.domain.rate_limits import RateLimits
from support.domain.attacks import Attacker
from support.domain.backend_circuits import BackendCircuits
from support.domain.billing_metrics import BillingMetrics
from support.domain.books_corruption import BooksCorruption
from support.domain.owed_charges import OwedCharges
from support.domain.reversals import Reversals
from support.domain.request_costs import RequestCosts
from support.domain.request_shapes import RequestShapes
from support.domain.streamed_chat import StreamedChat
from support.domain.tenancy import Tenancy
from support.harness.config import SuiteConfig, SuiteSetupError
from support.harness.namespace import Namespace
from support.harness.world import World
from support.stacks import Endpoints, Stack, launch
from support.stress import burst
from support.stress.faults import Faults
from support.stress.floods import Floods
from support.stress.settlement_faults import SettlementFaults
from support.stress.load import LoadRuns
from support.stress.process_spread import ProcessSpread
from support.stress.scale_out import ScaleOut
from support.tokens.jwks import PublishedKeys
from support.tokens.signing_keys import KeyMaterial

if TYPE_CHECKING:  # imported on first use: the OpenAI SDK takes ~0.7 s to import, and few scenarios use it
    from support.domain.applications import Applications

OPENAI_SDK_STEPS = "the OpenAI SDK"  # what each Given that builds an SDK application says (steps/sdk_steps.py)


# Set by a runner on a scenario that this process runs only if no other process takes it first (run-parallel's
# queue: tools/parallel/ordered_runner.py).
RUNS_IF_FREE = "runs_only_if_free"


def import_sdk_meanwhile(features, config) -> None:
    """When a scenario the run will run uses the OpenAI SDK, import it in a background thread now, while the stack
    starts (the run waits on child processes), so no scenario pays for it; a run without one pays nothing. A
    scenario that another worker may take does not count: a worker that takes one imports the SDK in its first step.
    An import that fails here fails again, and is reported, in the scenario that imports it."""
    if any(scenario.should_run(config) and not getattr(scenario, RUNS_IF_FREE, False)
           and any(OPENAI_SDK_STEPS in step.name for step in scenario.all_steps)
           for feature in features for scenario in feature.walk_scenarios()):
        threading.Thread(target=_import_sdk, name="import-openai-sdk", daemon=True).start()


def _import_sdk() -> None:
    try:
        import support.domain.applications  # noqa: F401
    except Exception:  # the scenario's own import says what is wrong
        pass


@dataclass
class SuiteRun:
    config: SuiteConfig
    stack: Stack
    endpoints: Endpoints
    keys: KeyMaterial
    db: Database
    backends: ModelBackends
    secrets_seen: SecretsSeen = field(default_factory=SecretsSeen)  # searched for in the gateway's logs after the run
    published_keys: PublishedKeys = field(default_factory=PublishedKeys)  # the JWKS as a relying party keeps it

    @classmethod
    def start(cls, userdata: dict, report: str | None = None, launched: Stack | None = None) -> SuiteRun:
        """Bring the stack up (the one `launch` started, else a new one). A set-up problem raises SuiteSetupError
        with one line that says what to do (the stack, if it was started, is down again)."""
        stack = launched or launch(userdata, report)
        config = stack.config
        try:
            endpoints = stack.up()
            if not endpoints.keys_dir:
                raise SuiteSetupError("this stack gave no keys folder: pass -D keys_dir=... (the folder scripts/keygen "
                                      "wrote for the deployment)")
            keys = KeyMaterial(endpoints.keys_dir)
        except SuiteSetupError:
            stack.down()
            raise
        evidence.describe_run(stack=stack.name, base_url=endpoints.base_url,
                              database=(endpoints.database_url or "none").split(":", 1)[0].split("+")[0],
                              run_id=config.run_id, worker=config.worker)
        return cls(config, stack, endpoints, keys, Database(endpoints.database_url),
                   ModelBackends(endpoints.stub_url, endpoints.backend_base_url))

    def stop(self) -> None:
        self.db.dispose()
        self.stack.down()


class ScenarioState:
    """Everything one scenario knows and the services it uses. Services are built on first use and share the
    scenario's API client (so every exchange is evidence) and world."""

    def __init__(self, run: SuiteRun, scenario_key: str, add_cleanup: Callable):
        self.run = run
        self.add_cleanup = add_cleanup  # behave's: runs when the scenario ends, last added first
        self.config, self.keys, self.db, self.stack = run.config, run.keys, run.db, run.stack
        self.ns = Namespace(self.config.run_id + self.config.worker, scenario_key)
        self.api = ApiClient(run.endpoints.base_url, request_id_prefix=self.ns.request_id_prefix,
                             trace_id=secrets.token_hex(16), timeout=self.config.request_timeout,
                             diagnose=run.stack.last_words)
        add_cleanup(self.api.close)
        self.world = World()

    # ---- services ----------------------------------------------------------------------------------------------

    @cached_property
    def platform(self) -> Platform:
        return Platform(self.api, self.keys, self.ns, self.world, self.run.published_keys)

    @cached_property
    def identity(self) -> Identity:
        return Identity(self.platform)

    @cached_property
    def rotation(self) -> Rotation:
        """The scenario's signing-key rotations, undone when it ends."""
        rotation = Rotation(self.identity)
        self.add_cleanup(rotation.restore)
        self.world.signing.signing = rotation.original
        return rotation

    @cached_property
    def retirement(self) -> Retirement:
        return Retirement(self.platform)

    @cached_property
    def tenancy(self) -> Tenancy:
        return Tenancy(self.identity)

    @cached_property
    def routing(self) -> ModelRoutes:
        return ModelRoutes(self.platform, self.db, self.run.backends, self.add_cleanup)

    @cached_property
    def budgets(self) -> Budgets:
        return Budgets(self.routing, self.db)

    @cached_property
    def rate_limits(self) -> RateLimits:
        return RateLimits(self.routing)

    @cached_property
    def costs(self) -> RequestCosts:
        return RequestCosts(self.routing, self.db, self.config.poll_timeout)

    @cached_property
    def streams(self) -> StreamedChat:
        return StreamedChat(self.routing, self.costs)

    @cached_property
    def retries(self) -> ChatRetries:
        return ChatRetries(self.routing, self.streams, self.add_cleanup, self.config.poll_timeout)

    @cached_property
    def shapes(self) -> RequestShapes:
        return RequestShapes(self.routing)

    @cached_property
    def applications(self) -> Applications:
        """Applications built on the official OpenAI SDK (their HTTP clients closed when the scenario ends)."""
        from support.domain.applications import Applications

        return Applications(self.routing, self.costs, self.add_cleanup)

    @cached_property
    def attacker(self) -> Attacker:
        return Attacker(self.identity, self.db, self.world.attacks)

    @cached_property
    def floods(self) -> Floods:
        return Floods(self.api.base_url, self.db, self.ns.request_id_prefix, self.world.first_org().slug,
                      self.config.artifacts_dir, read_metrics=lambda: self.scrape_metrics().text,
                      processes=self.config.gateway_processes)

    @cached_property
    def billing(self) -> Billing:
        return Billing(self.db, self.api, self.keys, self.ns, self.world, self.add_cleanup, self.config.poll_timeout)

    @cached_property
    def ledgers(self) -> OrgLedgers:
        return OrgLedgers(self.db, self.api, self.keys, self.world, self.config.poll_timeout)

    @cached_property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.platform, self.db)

    @cached_property
    def convergence(self) -> Declarations:
        """Declarations this scenario commits to the gateway's config repository, removed when it ends."""
        declarations = Declarations(self.run.endpoints.config_repo, self.api, self.keys, self.ns, self.world,
                                    self.run.backends.backend_base_url)
        self.add_cleanup(declarations.cleanup)
        return declarations

    @cached_property
    def faults(self) -> Faults:
        return Faults(self.stack, self.routing, self.add_cleanup)

    @cached_property
    def owed(self) -> OwedCharges:
        """A chat completion's charge followed through faults, and the dead letters it may become (issue 16)."""
        return OwedCharges(self.routing, self.db, self.keys, self.add_cleanup, self.config.poll_timeout)

    @cached_property
    def settlement_faults(self) -> SettlementFaults:
        return SettlementFaults(self.faults, self.owed)

    @cached_property
    def circuits(self) -> BackendCircuits:
        return BackendCircuits(self.routing, self.keys, self.config.poll_timeout)

    @cached_property
    def reversals(self) -> Reversals:
        return Reversals(self.billing)

    @cached_property
    def corruption(self) -> BooksCorruption:
        return BooksCorruption(self.billing)

    @cached_property
    def scale_out(self) -> ScaleOut:
        """Requests spread over the deployment's gateway processes, and what they show (features/scale)."""
        spread = ProcessSpread(self.config.gateway_processes, self.config.poll_timeout, self.at_once)
        return ScaleOut(spread, self.world, self.budgets, self.retries, self.identity, self.billing, self.ledgers,
                        self.stack, self.add_cleanup)

    @cached_property
    def billing_metrics(self) -> BillingMetrics:
        return BillingMetrics(self.scrape_metrics, self.db, self.world.metrics, self.config.poll_timeout)

    def scrape_metrics(self) -> Exchange:
        """GET /metrics of the whole deployment: every replica's, put together, when it runs several (where the
        stack says they are now: a replica started again is published elsewhere)."""
        return deployment_metrics.scrape(self.api, (self.stack.endpoints or self.run.endpoints).replica_urls)

    @cached_property
    def load(self) -> LoadRuns:
        return LoadRuns(self.api.base_url, self.world, self.config.artifacts_dir,
                        f"{self.config.run_id}{self.config.worker}")

    def at_once(self, batch: list[Request], *, title: str, watch: Callable[[], dict | None] | None = None
                ) -> burst.Burst:
        """Send the requests at the same instant (support.stress.burst), on the scenario's client."""
        return burst.at_once(self.api, batch, title=title, watch=watch)
