"""Gateway settings, read once from the environment. `Settings.from_env()` is the start-up path: it also refuses
settings that would leave the gateway open (short or equal HS256 secrets, a password hash below OWASP's cost
outside test mode, no key-encryption key)."""
from __future__ import annotations

import hashlib
import ipaddress
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# scrypt's log2 N: OWASP's minimum is 2^17 (with r=8, p=1). Only a gateway in test mode may go lower, so the
# suite's stacks log in fast; production refuses it at start-up.
PASSWORD_HASH_COST = 17
TEST_MODE_MINIMUM_HASH_COST = 4  # the least a stored hash may record (gateway/security.py)
MAXIMUM_HASH_COST = 20
MINIMUM_SECRET_LENGTH = 32
KEY_ENCRYPTION_KEYS_FILE = "key-encryption.keys"
MODES = ("production", "test")


def _env_number(name: str, default: int | float) -> int | float:
    """The variable read as the default's type (int or float), or the default when it is unset or empty."""
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return type(default)(raw)
    except ValueError:
        kind = "a whole number" if isinstance(default, int) else "a number"
        raise SystemExit(f"gateway: refusing to start: {name}={raw!r} is not {kind} (unset, it is {default})") from None


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in (os.environ.get(name) or "").split(",") if item.strip())


def _read_secret(env_name: str, keys_dir: Path | None, file_name: str) -> str:
    value = os.environ.get(env_name)
    if value:
        return value
    if keys_dir is not None and (keys_dir / file_name).is_file():
        return (keys_dir / file_name).read_text().strip()
    raise SystemExit(f"gateway: {env_name} is not set and {file_name} was not found in KEYS_DIR; "
                     f"run scripts/keygen --out DIR and set KEYS_DIR=DIR")


def _key_encryption_keys(keys_dir: Path | None) -> tuple[str, ...]:
    """The keys that seal signing keys at rest, newest first: KEY_ENCRYPTION_KEYS (comma-separated), else the file
    KEY_ENCRYPTION_KEYS_FILE, else KEYS_DIR/key-encryption.keys (one key a line). Empty when none is set."""
    if os.environ.get("KEY_ENCRYPTION_KEYS"):
        return _env_list("KEY_ENCRYPTION_KEYS")
    path = os.environ.get("KEY_ENCRYPTION_KEYS_FILE")
    file = Path(path) if path else (keys_dir / KEY_ENCRYPTION_KEYS_FILE if keys_dir is not None else None)
    if file is None or not file.is_file():
        if path:
            raise SystemExit(f"gateway: KEY_ENCRYPTION_KEYS_FILE={path} does not exist")
        return ()
    return tuple(line.strip() for line in file.read_text().splitlines() if line.strip() and not line.startswith("#"))


# Numeric settings: field -> environment variable (the field's default is used when the variable is unset).
NUMBERS = {
    "access_token_ttl_seconds": "ACCESS_TOKEN_TTL_SECONDS",
    "upstream_timeout_seconds": "UPSTREAM_TIMEOUT_SECONDS",
    "upstream_connect_timeout_seconds": "UPSTREAM_CONNECT_TIMEOUT_SECONDS",
    "max_body_bytes": "MAX_BODY_BYTES",
    "expiry_sweep_seconds": "EXPIRY_SWEEP_SECONDS",
    "reservation_margin_seconds": "RESERVATION_MARGIN_SECONDS",
    "default_reconcile_interval_seconds": "RECONCILE_INTERVAL_SECONDS",
    "port": "GATEWAY_PORT",
    "password_hash_cost": "PASSWORD_HASH_COST",
    "throttle_window_seconds": "THROTTLE_WINDOW_SECONDS",
    "throttle_failures_per_account": "THROTTLE_FAILURES_PER_ACCOUNT",
    "throttle_failures_per_address": "THROTTLE_FAILURES_PER_ADDRESS",
    "invitation_max_failed_attempts": "INVITATION_MAX_FAILED_ATTEMPTS",
    "audit_sampling_window_seconds": "AUDIT_SAMPLING_WINDOW_SECONDS",
    "audit_unauthenticated_per_address": "AUDIT_UNAUTHENTICATED_PER_ADDRESS",
    "audit_unauthenticated_per_window": "AUDIT_UNAUTHENTICATED_PER_WINDOW",
    "audit_unauthenticated_retention_days": "AUDIT_UNAUTHENTICATED_RETENTION_DAYS",
    "service_token_max_lifetime_seconds": "SERVICE_TOKEN_MAX_LIFETIME_SECONDS",
    "metrics_refresh_seconds": "METRICS_REFRESH_SECONDS",
    "settlement_retry_seconds": "SETTLEMENT_RETRY_SECONDS",
    "settlement_retry_max_seconds": "SETTLEMENT_RETRY_MAX_SECONDS",
    "settlement_max_tries": "SETTLEMENT_MAX_TRIES",
    "workers": "GATEWAY_WORKERS",
    "leader_retry_seconds": "LEADER_RETRY_SECONDS",
}
RATE_LIMIT_STORES = ("auto", "database", "process")


@dataclass(frozen=True)
class Settings:
    database_url: str
    keys_dir: Path | None
    internal_jwt_secret: str
    admin_jwt_secret: str
    config_repo: str | None
    config_branch: str = "main"
    mode: str = "production"
    issuer: str = "ai-gateway"
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 14 * 24 * 3600
    invitation_ttl_seconds: int = 7 * 24 * 3600
    upstream_timeout_seconds: float = 10.0
    upstream_connect_timeout_seconds: float = 2.0
    max_body_bytes: int = 1_000_000
    expiry_sweep_seconds: float = 0.5
    reservation_margin_seconds: float = 30.0  # how long a chat hold outlives its backends' timeouts
    default_reconcile_interval_seconds: float = 30.0
    host: str = "127.0.0.1"
    port: int = 8080
    # ---- security (docs/contract.md, "Security") ----
    password_hash_cost: int = PASSWORD_HASH_COST
    key_encryption_keys: tuple[str, ...] = ()  # base64 of 32 bytes each; the first seals, the others only unseal
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks whose X-Forwarded-For is believed
    throttle_window_seconds: float = 300.0
    throttle_failures_per_account: int = 5  # failed logins of one email, or acceptances of one invitation
    throttle_failures_per_address: int = 20  # failed logins and acceptances from one client address
    invitation_max_failed_attempts: int = 3  # wrong passwords before an invitation is used up
    audit_sampling_window_seconds: float = 10.0
    audit_unauthenticated_per_address: int = 50  # refusals without credentials audited one by one, per window
    audit_unauthenticated_per_window: int = 500  # the same, from every address together
    audit_unauthenticated_retention_days: float = 30.0
    service_token_issuers: tuple[str, ...] = ()  # accepted `iss` of service and admin tokens; empty: any, but one
    service_token_max_lifetime_seconds: int = 3600
    metrics_token: str | None = None  # when set, /metrics wants `Authorization: Bearer <it>`
    metrics_refresh_seconds: float = 5.0  # reservation counts are read at most this often, whoever scrapes
    # ---- the settlement journal (gateway/services/settlements.py) ----
    settlement_journal_dir: Path | None = None  # None: beside a SQLite file, else in the temp folder (see below)
    settlement_journal_fsync: bool = True  # off only to measure what the disk costs
    settlement_retry_seconds: float = 0.5  # the first retry's delay; doubled each try
    settlement_retry_max_seconds: float = 30.0
    settlement_max_tries: int = 5  # refusals by the database before a settlement becomes a dead letter
    # ---- many processes (docs/contract.md, "Many processes and replicas") ----
    workers: int = 1  # uvicorn worker processes; above 1 only on PostgreSQL
    rate_limit_store: str = "auto"  # database (PostgreSQL, shared by every process), process, or auto: by the database
    leader_retry_seconds: float = 2.0  # how often a process tries to lead, and the leader checks it still does
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> "Settings":
        keys_dir = Path(os.environ["KEYS_DIR"]) if os.environ.get("KEYS_DIR") else None
        settings = cls(
            database_url=os.environ.get("DATABASE_URL", "sqlite:///gateway.db"),
            keys_dir=keys_dir,
            internal_jwt_secret=_read_secret("BILLING_INTERNAL_JWT_SECRET", keys_dir, "internal-jwt.secret"),
            admin_jwt_secret=_read_secret("BILLING_ADMIN_JWT_SECRET", keys_dir, "admin-jwt.secret"),
            config_repo=os.environ.get("CONFIG_REPO") or None,
            config_branch=os.environ.get("CONFIG_BRANCH", "main"),
            mode=os.environ.get("GATEWAY_MODE") or "production",
            issuer=os.environ.get("GATEWAY_ISSUER", "ai-gateway"),
            host=os.environ.get("GATEWAY_HOST", "127.0.0.1"),
            key_encryption_keys=_key_encryption_keys(keys_dir),
            trusted_proxies=_env_list("TRUSTED_PROXIES"),
            service_token_issuers=_env_list("SERVICE_TOKEN_ISSUERS"),
            metrics_token=os.environ.get("METRICS_TOKEN") or None,
            settlement_journal_dir=Path(os.environ["SETTLEMENT_JOURNAL_DIR"])
            if os.environ.get("SETTLEMENT_JOURNAL_DIR") else None,
            settlement_journal_fsync=os.environ.get("SETTLEMENT_JOURNAL_FSYNC", "1").strip().lower()
            not in ("0", "false", "no", "off"),
            rate_limit_store=(os.environ.get("RATE_LIMIT_STORE") or "auto").strip().lower(),
            **{name: _env_number(variable, cls.__dataclass_fields__[name].default)
               for name, variable in NUMBERS.items()},
        )
        problems = settings.problems()
        if problems:
            raise SystemExit("gateway: refusing to start: " + "; ".join(problems))
        return settings

    def settlement_journal_path(self) -> Path:
        """SETTLEMENT_JOURNAL_DIR; without it, `<file>.settlements` beside a SQLite database, else a folder named
        for the database in the temp folder (survives a restart of the process, not of the machine: production
        sets SETTLEMENT_JOURNAL_DIR on persistent storage)."""
        if self.settlement_journal_dir is not None:
            return self.settlement_journal_dir
        if self.database_url.startswith("sqlite:///") and ":memory:" not in self.database_url:
            return Path(self.database_url.removeprefix("sqlite:///") + ".settlements")
        named = hashlib.sha256(self.database_url.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"gateway-settlements-{named}"

    @property
    def on_postgresql(self) -> bool:
        return self.database_url.startswith("postgresql")

    @property
    def shared_rate_limits(self) -> bool:
        """Rate limits counted in the database, across every process (else in this process only)."""
        return self.rate_limit_store == "database" or (self.rate_limit_store == "auto" and self.on_postgresql)

    def problems(self) -> list[str]:
        """What makes these settings unsafe to serve with, one sentence each (empty: none)."""
        found = []
        if self.mode not in MODES:
            found.append(f"GATEWAY_MODE is {self.mode!r}; use production or test")
        for name, secret in (("BILLING_INTERNAL_JWT_SECRET", self.internal_jwt_secret),
                             ("BILLING_ADMIN_JWT_SECRET", self.admin_jwt_secret)):
            if len(secret) < MINIMUM_SECRET_LENGTH:
                found.append(f"{name} is {len(secret)} characters long; it needs at least {MINIMUM_SECRET_LENGTH} "
                             f"(scripts/keygen writes 64 hex characters)")
        if self.internal_jwt_secret == self.admin_jwt_secret:
            found.append("BILLING_INTERNAL_JWT_SECRET and BILLING_ADMIN_JWT_SECRET are equal, so a service token "
                         "would verify as an admin token; give each its own secret")
        floor = TEST_MODE_MINIMUM_HASH_COST if self.mode == "test" else PASSWORD_HASH_COST
        if not floor <= self.password_hash_cost <= MAXIMUM_HASH_COST:
            found.append(f"PASSWORD_HASH_COST is {self.password_hash_cost}; it must be {floor} to "
                         f"{MAXIMUM_HASH_COST} (scrypt's log2 N; below {PASSWORD_HASH_COST} only with "
                         f"GATEWAY_MODE=test)")
        if not self.key_encryption_keys:
            found.append("no key-encryption key: set KEY_ENCRYPTION_KEYS or KEY_ENCRYPTION_KEYS_FILE, or put "
                         f"{KEY_ENCRYPTION_KEYS_FILE} in KEYS_DIR (scripts/keygen writes one; "
                         "python -m gateway.secrets_at_rest new-key prints one)")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                found.append(f"TRUSTED_PROXIES names {proxy!r}, which is not an address or a network")
        for name, value in (("THROTTLE_FAILURES_PER_ACCOUNT", self.throttle_failures_per_account),
                            ("THROTTLE_FAILURES_PER_ADDRESS", self.throttle_failures_per_address),
                            ("INVITATION_MAX_FAILED_ATTEMPTS", self.invitation_max_failed_attempts),
                            ("AUDIT_UNAUTHENTICATED_PER_ADDRESS", self.audit_unauthenticated_per_address),
                            ("AUDIT_UNAUTHENTICATED_PER_WINDOW", self.audit_unauthenticated_per_window),
                            ("SERVICE_TOKEN_MAX_LIFETIME_SECONDS", self.service_token_max_lifetime_seconds),
                            ("SETTLEMENT_MAX_TRIES", self.settlement_max_tries)):
            if value < 1:
                found.append(f"{name} is {value}; it must be at least 1")
        found.extend(self._scale_problems())
        return found

    def _scale_problems(self) -> list[str]:
        found = []
        if self.workers < 1:
            found.append(f"GATEWAY_WORKERS is {self.workers}; it must be at least 1")
        elif self.workers > 1 and not self.on_postgresql:
            found.append(f"GATEWAY_WORKERS is {self.workers}, but several processes need PostgreSQL (their rate "
                         f"limits and leadership are shared there); use GATEWAY_WORKERS=1 with SQLite")
        if self.rate_limit_store not in RATE_LIMIT_STORES:
            found.append(f"RATE_LIMIT_STORE is {self.rate_limit_store!r}; use {', '.join(RATE_LIMIT_STORES)}")
        elif self.rate_limit_store == "database" and not self.on_postgresql:
            found.append("RATE_LIMIT_STORE is database, which needs PostgreSQL; use auto or process with SQLite")
        if self.leader_retry_seconds <= 0:
            found.append(f"LEADER_RETRY_SECONDS is {self.leader_retry_seconds:g}; it must be above 0")
        return found
