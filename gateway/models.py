"""The gateway's tables. Money is always an integer number of micro-USD."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class UtcDateTime(TypeDecorator):
    """Always an aware UTC datetime in Python, whatever the database keeps (SQLite drops the offset)."""
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


Micros = BigInteger
Stamp = UtcDateTime()


class Account(Base):
    """A billing account; balances are kept in columns and proven by the ledger's postings."""
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    identity_anchor: Mapped[str | None] = mapped_column(String(200))
    minted_micros: Mapped[int] = mapped_column(Micros, default=0)
    available_micros: Mapped[int] = mapped_column(Micros, default=0)
    held_micros: Mapped[int] = mapped_column(Micros, default=0)
    spent_micros: Mapped[int] = mapped_column(Micros, default=0)
    created_at: Mapped[datetime] = mapped_column(Stamp, default=utcnow)


class Org(Base):
    __tablename__ = "orgs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    budget_limit_micros: Mapped[int | None] = mapped_column(Micros)  # None: no budget limit
    allowed_models: Mapped[list | None] = mapped_column(JSON)  # None: every model
    rate_limit_requests: Mapped[int | None] = mapped_column(Integer)
    rate_limit_window_seconds: Mapped[int | None] = mapped_column(Integer)
    managed_by: Mapped[str | None] = mapped_column(String(20))  # "git" when declared in the config repo
    sync_policy: Mapped[dict | None] = mapped_column(JSON)  # per-org override of self_heal
    created_at: Mapped[datetime] = mapped_column(Stamp, default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(Stamp, default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(Stamp, default=utcnow)


class Invitation(Base):
    __tablename__ = "invitations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"))
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(Stamp, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(Stamp)
    accepted_at: Mapped[datetime | None] = mapped_column(Stamp)
    invited_by: Mapped[str | None] = mapped_column(String(64), index=True)  # user id; None: a platform admin
    revoked_at: Mapped[datetime | None] = mapped_column(Stamp)
    # Wrong passwords tried on it (and tries in flight); at INVITATION_MAX_FAILED_ATTEMPTS it is used up.
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the token's jti
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    expires_at: Mapped[datetime] = mapped_column(Stamp)
    used_at: Mapped[datetime | None] = mapped_column(Stamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Stamp)


class SigningKey(Base):
    """ES256 keys; state: next (published, not signing), active (signing), retiring (verifying), retired."""
    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(100), primary_key=True)
    # The private key's PEM sealed under the key-encryption key (gateway/secrets_at_rest.py), never in plain text.
    private_key_sealed: Mapped[str] = mapped_column(Text)
    public_pem: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(Stamp, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(Stamp)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Stamp, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(Stamp)


class CreditLot(Base):
    __tablename__ = "credit_lots"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount_micros: Mapped[int] = mapped_column(Micros)
    reason: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(Stamp, default=utcnow)


class Reservation(Base):
    """Two-phase hold on an account: pending -> finalized | released | expired; only pending moves. A charge (a
    finalized reservation, or an expired or released one charged late) can then be voided, in part or whole
    (whole: status `voided`)."""
    __tablename__ = "reservations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount_micros: Mapped[int] = mapped_column(Micros)
    actual_micros: Mapped[int | None] = mapped_column(Micros)
    status: Mapped[str] = mapped_column(String(20), index=True)
    expires_at: Mapped[datetime] = mapped_column(Stamp, index=True)
    created_at: Mapped[datetime] = mapped_column(Stamp, default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(Stamp)
    request_id: Mapped[str | None] = mapped_column(String(128))
    # Charged beyond the hold (a chat backend reported more usage than the gateway's bound); None: no overrun.
    overrun_micros: Mapped[int | None] = mapped_column(Micros)
    # Given back of the charge by platform admins (void / refund); None: nothing.
    voided_micros: Mapped[int | None] = mapped_column(Micros)


class LedgerEntry(Base):
    """One business event; its postings sum to zero."""
    __tablename__ = "ledger_entries"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # mint, reserve, finalize, release, expire, late_charge, void
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    reservation_id: Mapped[str | None] = mapped_column(String(64), index=True)
    lot_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Stamp, default=utcnow)


class LedgerPosting(Base):
    """A signed amount moved into (positive) or out of (negative) one bucket of an account.

    Buckets: issuance (the platform's side of a mint), available, held, spent.
    """
    __tablename__ = "ledger_postings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[str] = mapped_column(ForeignKey("ledger_entries.id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    bucket: Mapped[str] = mapped_column(String(20))
    amount_micros: Mapped[int] = mapped_column(Micros)


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_records"
    scope: Mapped[str] = mapped_column(String(200), primary_key=True)  # endpoint + principal
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))  # in_progress, done
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(Stamp, default=utcnow)


class SettlementDeadLetter(Base):
    """A settlement of the journal that kept failing: kept until a platform admin replays it (state dead ->
    replayed). `settlement` is the journal's entry as written (gateway/services/settlements.py)."""
    __tablename__ = "settlement_dead_letters"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "dl_" + the journal entry's id
    reservation_id: Mapped[str] = mapped_column(String(64), index=True)
    account_id: Mapped[str | None] = mapped_column(String(64))
    org: Mapped[str | None] = mapped_column(String(100))
    request_id: Mapped[str | None] = mapped_column(String(128))
    amount_micros: Mapped[int] = mapped_column(Micros)
    settlement: Mapped[dict] = mapped_column(JSON)
    error: Mapped[str] = mapped_column(Text)
    tries: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), index=True)
    created_at: Mapped[datetime] = mapped_column(Stamp, default=utcnow)
    replayed_at: Mapped[datetime | None] = mapped_column(Stamp)
    replayed_by: Mapped[str | None] = mapped_column(String(200))


class AuditEvent(Base):
    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(Stamp, default=utcnow, index=True)
    actor_type: Mapped[str] = mapped_column(String(20))  # user, api_key, service, admin, system, anonymous
    actor_id: Mapped[str | None] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str | None] = mapped_column(String(300))
    outcome: Mapped[str] = mapped_column(String(20), index=True)  # allowed, denied, failed
    reason: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(128), index=True)
    trace_id: Mapped[str | None] = mapped_column(String(32))
    org: Mapped[str | None] = mapped_column(String(100), index=True)  # org slug
    details: Mapped[dict | None] = mapped_column(JSON)


class Model(Base):
    """A routed model: price per 1k tokens and backends in route order [{name, url, timeout_seconds}]."""
    __tablename__ = "models"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    prompt_price_per_1k_micros: Mapped[int] = mapped_column(Micros)
    completion_price_per_1k_micros: Mapped[int] = mapped_column(Micros)
    backends: Mapped[list] = mapped_column(JSON)
    default_max_tokens: Mapped[int] = mapped_column(Integer, default=256)
    # Tokens to hold per content part of a type the gateway cannot count, by type ({"image_url": 85}); a part of a
    # type not listed here is refused. None: text only.
    content_part_tokens: Mapped[dict | None] = mapped_column(JSON)
    managed_by: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(Stamp, default=utcnow)


class ConfigState(Base):
    """The reconciler's last result (a single row, id 1)."""
    __tablename__ = "config_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="Unknown")
    revision: Mapped[str | None] = mapped_column(String(64))
    target_revision: Mapped[str | None] = mapped_column(String(64))
    last_synced_at: Mapped[datetime | None] = mapped_column(Stamp)
    last_attempt_at: Mapped[datetime | None] = mapped_column(Stamp)
    drift: Mapped[list | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    settings: Mapped[dict | None] = mapped_column(JSON)  # the applied gateway.yaml


Index("ix_reservations_pending_expiry", Reservation.status, Reservation.expires_at)
Index("ix_audit_org_at", AuditEvent.org, AuditEvent.at)
# The retention purge of anonymous refusals reads old events of one actor type (gateway/audit.py).
Index("ix_audit_actor_type_at", AuditEvent.actor_type, AuditEvent.at)
