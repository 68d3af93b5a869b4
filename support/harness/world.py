"""What one scenario knows: the things it made (orgs, people, keys, models, accounts, reservations) by their
business names, and what its steps hand on to later steps (the last answer, bursts, readings), each in a typed field.

Services keep what they create here; steps store what a When got back (`world.last.answer`) and what a Then will
check. Nothing else is kept between steps.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from support.harness.redaction import register_secret

if TYPE_CHECKING:  # result types made higher up; the world only holds them
    from concurrent.futures import Future

    from support.client.api import Exchange
    from support.client.openai_sdk import SdkApplication, SdkCall
    from support.domain.declarations import Status
    from support.domain.roles import OrgAction
    from support.domain.tenancy import Probe
    from support.stress.burst import Burst
    from support.stress.faults import InFlight, MalformedBurst
    from support.stress.process_spread import SteadyTraffic


# ---- things the scenario made ----------------------------------------------------------------------------------

@dataclass
class Person:
    name: str
    email: str
    password: str = field(default_factory=lambda: "pw-" + secrets.token_urlsafe(12))
    user_id: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None

    def __post_init__(self):
        register_secret(self.password, "password")


@dataclass
class OrgRecord:
    name: str
    slug: str
    account_id: str
    owner_invitation: str | None = None


@dataclass
class KeyRecord:
    name: str
    id: str
    secret: str
    prefix: str
    org: str  # the org's business name


@dataclass(frozen=True)
class Backend:
    """A model backend of the scenario: its business name ("primary") and its own namespace on the stub."""
    name: str
    namespace: str

    def chat_url(self, stub_url: str) -> str:
        return f"{stub_url}/ns/{self.namespace}/v1/chat/completions"


@dataclass
class Model:
    name: str  # the business name the sentences use
    served_as: str  # the scenario's namespaced name, as the gateway knows the model
    prices: tuple[int, int]  # micro-USD per 1k prompt tokens and per 1k completion tokens
    backends: dict[str, Backend]  # by business name, in route order
    route: list[dict] | None = None  # the backends as seeded into the database (None: declared in git)
    backend_timeout: float | None = None  # seconds each backend is given, when the route says


@dataclass
class Account:
    """A billing account seeded straight into the database."""
    name: str
    id: str
    anchor: str | None = None


@dataclass
class Reservation:
    id: str
    account: Account
    amount_micros: int


# ---- what steps hand on ----------------------------------------------------------------------------------------

@dataclass
class Last:
    """What the last When got back, for the Thens after it."""
    answer: Exchange | None = None
    answers: dict[str, Exchange] = field(default_factory=dict)  # requests sent together, by who or what sent them
    about: str = ""  # what the last request was, in the sentence's words (a forgery, a flawed body, a credential)
    ledger_entries: int | None = None  # entries on the billing account before the last billing request


@dataclass
class Chat:
    """Chat traffic: the model being asked and what its backends were doing."""
    model: str | None = None  # business name of the model asked last (or declared last)
    calls_before: dict[str, int] = field(default_factory=dict)  # backend -> calls it had seen before the request
    stopped: set[str] = field(default_factory=set)  # backends whose process is gone
    hung: list[str] = field(default_factory=list)  # backends that take a request and never answer
    refusal: dict | None = None  # the body a backend refuses requests with
    charges: dict[str, list[int]] = field(default_factory=dict)  # org -> what each answered completion cost
    answered: int = 0
    refused: int = 0


@dataclass
class Sessions:
    """Logging in and the tokens handed out."""
    failed_logins: list[Exchange] = field(default_factory=list)
    previous_tokens: tuple[str | None, str | None] | None = None  # (access, refresh) before a refresh
    jwks: dict | None = None  # the published signing keys, as fetched
    jwks_answer: Exchange | None = None
    claims: dict | None = None  # an access token's claims, verified against the published keys


@dataclass
class SigningKeys:
    """Key ids through a rotation."""
    signing: str | None = None  # the key that signs now, as far as the scenario knows
    previous: str | None = None
    new: str | None = None
    retired: str | None = None


@dataclass
class Attempt:
    """Someone attempting an org action of the role matrix."""
    person: str
    action: OrgAction
    org: str


@dataclass
class Probing:
    """One org's identity asking for another org's thing, and the same question about nothing."""
    probe: Probe | None = None
    answer: Exchange | None = None
    twin: Probe | None = None
    twin_answer: Exchange | None = None
    described: str = ""
    own_reads: dict[str, Exchange] = field(default_factory=dict)  # "owner: members" -> the answer


@dataclass
class Metrics:
    before: list = field(default_factory=list)  # Prometheus samples
    after: list = field(default_factory=list)
    answer: Exchange | None = None  # the second reading


@dataclass
class Budgets:
    limits: dict[str, int] = field(default_factory=dict)  # org -> the budget the scenario set, micro-USD
    completion_price: int | None = None  # what one completion of the budget's model costs


@dataclass
class RateLimit:
    retry_after: int | None = None  # seconds, as the refusal said
    window_seconds: int | None = None  # the org's window, as the scenario set it
    first_sent_at: float | None = None  # time.monotonic() as the first request of the used-up window left
    refused_by: float | None = None  # time.monotonic() once the refusal had come


@dataclass
class Declared:
    """Configuration committed to git."""
    broken_problem: str | None = None  # what is wrong with the broken file committed
    broken_org: str | None = None
    status: Status | None = None


@dataclass
class AuditReads:
    changes: list[Exchange] = field(default_factory=list)  # changes made one after another
    found: list[dict] = field(default_factory=list)  # events a search found
    range_read: Exchange | None = None  # the read that found them
    expected: list[dict] = field(default_factory=list)
    page_size: int = 0
    pages: list[Exchange] = field(default_factory=list)
    whole_log: list[dict] = field(default_factory=list)
    lookup: Exchange | None = None
    event: dict | None = None  # the one event a request left
    bad_traceparent: str | None = None


@dataclass
class LoadRun:
    budgets: dict[str, int | None] = field(default_factory=dict)  # org -> budget (None: no limit)
    figures: dict | None = None  # what the load run measured


@dataclass
class Retries:
    """A chat completion sent with an Idempotency-Key, and sent again."""
    first: Exchange | None = None  # the first request with the key
    first_body: dict | None = None
    retry: Exchange | None = None
    in_flight: Future | None = None  # the first request while it runs (its Exchange when done)

    def charged_as(self, answer: Exchange) -> Exchange:
        """The request whose charge pays for this answer: a retry's answer is paid by its first request."""
        return self.first if answer is self.retry and self.first is not None else answer


@dataclass
class Application:
    """An application built on the official OpenAI SDK."""
    sdk: SdkApplication | None = None
    call: SdkCall | None = None  # what its last call returned or raised, and the HTTP attempts it made
    asked: str | None = None  # the model its last call asked for (by the sentence's name)


@dataclass
class OwedCharge:
    """A chat completion whose charge is followed through a fault (issue 16)."""
    exchange: Exchange | None = None  # the completion (its answer, or none when the gateway died)
    in_flight: Future | None = None  # while it runs in the background
    org: str | None = None
    reservation: dict | None = None  # its hold, as the database holds it
    account_lock: str | None = None  # the database rule that refuses changes to the org's account
    dead_letter: dict | None = None  # what a platform admin sees of its charge set aside
    replay: Exchange | None = None  # a platform admin replaying that dead letter


@dataclass
class Circuits:
    """A backend's circuit breaker as a scenario drives it."""
    failures: int = 0  # failures in a row that open it
    cooldown: float = 0.0  # seconds before the probe
    answers: list[Exchange] = field(default_factory=list)  # completions sent at once


@dataclass
class Moves:
    """Reservations moved through the billing API and by platform admins (issue 16): voids, refused moves."""
    voids: list[Exchange] = field(default_factory=list)
    tampered: dict[str, str] = field(default_factory=dict)  # account name -> the kind of corruption made


@dataclass
class Spread:
    """Requests spread over several gateway processes (features/scale): the bursts of the last step that spread
    them, and steady traffic across a replica's death."""
    sent: list[Exchange] = field(default_factory=list)
    traffic: SteadyTraffic | None = None
    killed: str | None = None  # the replica killed (its host name, as X-Gateway-Process names it)
    killed_at: float | None = None  # time.monotonic() when it was killed


@dataclass
class Attacks:
    """What an attacker tried (features/security), from which client address, and what came back."""
    address: str | None = None  # the attacker's client address (X-Forwarded-For)
    tries: list[Exchange] = field(default_factory=list)  # guesses, in order
    held_invitation: str | None = None  # the token of an invitation the attacker holds
    answers: list[Exchange] = field(default_factory=list)  # answers that carried a secret
    removal: Exchange | None = None  # a member's removal
    flood: dict | None = None  # what a flood beside normal traffic measured


@dataclass
class World:
    orgs: dict[str, OrgRecord] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    invitations: dict[str, str] = field(default_factory=dict)  # person -> invitation token
    models: dict[str, Model] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)  # billing accounts seeded in the database
    reservations: list[Reservation] = field(default_factory=list)  # on those accounts, oldest first
    idempotency_keys: dict[str, str] = field(default_factory=dict)  # sentence's words -> the key sent
    org_reservations: dict[str, str] = field(default_factory=dict)  # org -> a pending reservation of its account

    last: Last = field(default_factory=Last)
    chat: Chat = field(default_factory=Chat)
    sessions: Sessions = field(default_factory=Sessions)
    signing: SigningKeys = field(default_factory=SigningKeys)
    attempt: Attempt | None = None
    probing: Probing = field(default_factory=Probing)
    metrics: Metrics = field(default_factory=Metrics)
    budgets: Budgets = field(default_factory=Budgets)
    rate_limit: RateLimit = field(default_factory=RateLimit)
    declared: Declared = field(default_factory=Declared)
    audit: AuditReads = field(default_factory=AuditReads)
    burst: Burst | None = None  # requests fired at once
    malformed: MalformedBurst | None = None  # the corpus of malformed requests, with health probes
    in_flight: InFlight | None = None  # requests left in flight when the gateway dies
    gateway_pid: int | None = None  # the gateway's process before a fault
    load: LoadRun = field(default_factory=LoadRun)
    attacks: Attacks = field(default_factory=Attacks)
    retries: Retries = field(default_factory=Retries)
    application: Application = field(default_factory=Application)
    owed: OwedCharge = field(default_factory=OwedCharge)
    circuits: Circuits = field(default_factory=Circuits)
    moves: Moves = field(default_factory=Moves)
    spread: Spread = field(default_factory=Spread)

    def org(self, name: str) -> OrgRecord:
        return _known(self.orgs, name, "org")

    def person(self, name: str) -> Person:
        return _known(self.people, name, "person")

    def key(self, name: str) -> KeyRecord:
        return _known(self.keys, name, "API key")

    def model(self, name: str) -> Model:
        return _known(self.models, name, "model")

    def account(self, name: str = "the account") -> Account:
        return _known(self.accounts, name, "billing account")

    def reservation(self) -> Reservation:
        if not self.reservations:
            raise AssertionError("The scenario has no reservation yet: seed one or have the service reserve first")
        return self.reservations[-1]

    def first_org(self) -> OrgRecord:
        """The org the scenario made first (sentences that name no org mean it)."""
        if not self.orgs:
            raise AssertionError("The scenario has made no org yet")
        return next(iter(self.orgs.values()))

    def answer(self) -> Exchange:
        if self.last.answer is None:
            raise AssertionError("No request has been made yet in this scenario, so there is no answer to check")
        return self.last.answer


def _known(things: dict, name: str, kind: str):
    if name not in things:
        raise AssertionError(f"The scenario has no {kind} called {name!r}; it knows: {', '.join(things) or 'none'}")
    return things[name]
