"""Gateway settings, read once from the environment."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _read_secret(env_name: str, keys_dir: Path | None, file_name: str) -> str:
    value = os.environ.get(env_name)
    if value:
        return value
    if keys_dir is not None and (keys_dir / file_name).is_file():
        return (keys_dir / file_name).read_text().strip()
    raise SystemExit(f"gateway: {env_name} is not set and {file_name} was not found in KEYS_DIR; "
                     f"run scripts/keygen --out DIR and set KEYS_DIR=DIR")


@dataclass(frozen=True)
class Settings:
    database_url: str
    keys_dir: Path | None
    internal_jwt_secret: str
    admin_jwt_secret: str
    config_repo: str | None
    config_branch: str = "main"
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
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> "Settings":
        keys_dir = Path(os.environ["KEYS_DIR"]) if os.environ.get("KEYS_DIR") else None
        return cls(
            database_url=os.environ.get("DATABASE_URL", "sqlite:///gateway.db"),
            keys_dir=keys_dir,
            internal_jwt_secret=_read_secret("BILLING_INTERNAL_JWT_SECRET", keys_dir, "internal-jwt.secret"),
            admin_jwt_secret=_read_secret("BILLING_ADMIN_JWT_SECRET", keys_dir, "admin-jwt.secret"),
            config_repo=os.environ.get("CONFIG_REPO") or None,
            config_branch=os.environ.get("CONFIG_BRANCH", "main"),
            issuer=os.environ.get("GATEWAY_ISSUER", "ai-gateway"),
            access_token_ttl_seconds=_env_int("ACCESS_TOKEN_TTL_SECONDS", 900),
            upstream_timeout_seconds=_env_float("UPSTREAM_TIMEOUT_SECONDS", 10.0),
            upstream_connect_timeout_seconds=_env_float("UPSTREAM_CONNECT_TIMEOUT_SECONDS", 2.0),
            max_body_bytes=_env_int("MAX_BODY_BYTES", 1_000_000),
            expiry_sweep_seconds=_env_float("EXPIRY_SWEEP_SECONDS", 0.5),
            reservation_margin_seconds=_env_float("RESERVATION_MARGIN_SECONDS", 30.0),
            default_reconcile_interval_seconds=_env_float("RECONCILE_INTERVAL_SECONDS", 30.0),
            host=os.environ.get("GATEWAY_HOST", "127.0.0.1"),
            port=_env_int("GATEWAY_PORT", 8080),
        )
