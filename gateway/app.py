"""The gateway application: routers, middleware, and the background reconciler and expiry sweeper."""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager, suppress
from dataclasses import replace

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select, text

from gateway import audit, errors, metrics, process_slots
from gateway.config_sync import Reconciler
from gateway.db import Database
from gateway.middleware import GatewayMiddleware
from gateway.leadership import Leadership, process_name
from gateway.models import ConfigState, Reservation, SigningKey, utcnow
from gateway.routers import audit_log, auth, billing, chat, config, health, keys, orgs, people
from gateway.routers import admin_cleanup, billing_admin, reservation_reads, signing_keys
from gateway.runtime import Runtime
from gateway.secrets_at_rest import Sealer, reseal_signing_keys
from gateway.security import KeyRing
from gateway.services import circuit_breakers, ledger
from gateway.services.chat_billing import make_chat_store
from gateway.services.routing import Upstream
from gateway.services.settlements import Settlements
from gateway.settings import Settings
from gateway.shared_limits import prune, rate_limiter_for, share_guards
from gateway.throttle import Guards

log = logging.getLogger("gateway")
WINDOW_END_SLACK = 0.005  # seconds: the audit upkeep runs this long after a sampling window ends
PURGE_SECONDS = 1.0  # audit upkeep: the retention purge (and the shared limits' prune) at most this often
STARTUP_LOCK = int.from_bytes(b"gwstart", "big")  # serializes the start-up work of processes starting together


def install_signing_key(db: Database, settings: Settings, keyring: KeyRing) -> None:
    """On first start, the key pair from KEYS_DIR becomes the active signing key (sealed, like every key)."""
    with db.transaction() as session:
        if db.dialect == "postgresql":  # processes starting together: one installs, the others find it installed
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": STARTUP_LOCK})
        if session.scalar(select(SigningKey).where(SigningKey.state == "active")) is not None:
            return
        keys_dir = settings.keys_dir
        if keys_dir is None or not (keys_dir / "signing-key.pem").is_file():
            raise SystemExit("gateway: no active signing key and no signing-key.pem in KEYS_DIR; "
                             "run scripts/keygen --out DIR and set KEYS_DIR=DIR")
        kid = (keys_dir / "signing-key.kid").read_text().strip()
        existing = session.get(SigningKey, kid)
        if existing is not None:
            existing.state = "active"
        else:
            session.add(SigningKey(kid=kid, private_key_sealed=keyring.sealed(kid, (keys_dir / "signing-key.pem")
                                                                            .read_text()),
                                   public_pem=(keys_dir / "signing-key.pub.pem").read_text(), state="active"))


async def _every(seconds_fn, work, name: str, wake: asyncio.Event | None = None):
    while True:
        try:
            await run_in_threadpool(work)
        except errors.DATABASE_UNAVAILABLE as exc:  # an outage: one line per pass, not a traceback every 0.25 s
            log.warning("%s failed, the database is unavailable (%s); will retry", name, type(exc).__name__)
        except Exception:
            log.exception("%s failed; will retry", name)
        try:
            if wake is None:
                await asyncio.sleep(seconds_fn())
            else:
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=seconds_fn())
                wake.clear()
        except Exception:
            await asyncio.sleep(1)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    # Worker processes share one gateway's connections to the database: each takes its part of them.
    db = Database(settings.database_url, pool_size=max(4, 20 // settings.workers))
    sealer = Sealer(settings.key_encryption_keys)
    # On PostgreSQL other processes and replicas may rotate keys: the ring compares itself with the database on use.
    rt = Runtime(settings=settings, db=db, keyring=KeyRing(db, sealer, every_use=settings.on_postgresql))
    rt.leadership = Leadership(settings.database_url, settings.leader_retry_seconds,
                               on_connection_lost=lambda: _forget_connections(rt))
    rt.process_name = process_name()
    rt.reconciler = Reconciler(rt)
    rt.guards = Guards(settings)
    if settings.shared_rate_limits:  # throttles and the audit budget hold across processes, like rate limits
        share_guards(rt.guards, db, settings)
    rt.breakers = circuit_breakers.for_runtime(rt)

    def sweep_expired():
        if not rt.leadership.leads:
            return
        # Most passes find nothing due, which a read says without the write lock: on SQLite a pass would otherwise
        # take it four times a second and, while the database is locked, keep this process's other writers waiting.
        with db.sessions() as session:
            if session.scalar(select(Reservation.id).where(Reservation.status == "pending",
                                                           Reservation.expires_at <= utcnow()).limit(1)) is None:
                return
        with db.transaction() as session:
            ledger.expire_due(session)

    purged = [float("-inf")]  # when the last purge ran, by time.monotonic()

    def audit_upkeep():
        """Summarise the unauthenticated refusals that were only counted, once a sampling window is over, and drop
        those past their retention. A window may be short (half a second on test stacks), so the write lock is taken
        for summaries only when some refusals were counted, and the purge runs at most once a second."""
        counted = rt.guards.refusals.drain()
        if counted:
            with db.transaction() as session:
                audit.record_unrecorded(session, counted, rt.guards.refusals)
        if time.monotonic() - purged[0] < PURGE_SECONDS:
            return
        purged[0] = time.monotonic()
        with db.transaction() as session:
            audit.purge_unauthenticated(session, settings.audit_unauthenticated_retention_days)
        if settings.shared_rate_limits and rt.leadership.leads:
            prune(db, settings)

    def first_and_later_syncs():
        if not rt.leadership.leads:  # another process reconciles; this one is ready once a pass has been made
            rt.first_sync_done = rt.first_sync_done or _a_pass_was_made(db)
            return
        try:
            rt.reconciler.sync()
        finally:
            rt.first_sync_done = True

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(install_signing_key, db, settings, rt.keyring)
        resealed = await run_in_threadpool(reseal_signing_keys, db, sealer)
        if resealed:
            log.info("sealed %d signing key(s) under key-encryption key %s", resealed, sealer.current)
        rt.keyring.reload()
        rt.upstream = Upstream()  # the model backends' client (aiohttp), made inside the running loop
        rt.chat_store = make_chat_store(db, rt.in_db_thread, connections=max(4, 16 // settings.workers))
        rt.rate_limiter = rate_limiter_for(rt)
        # This process's slot of the journal folder, which other worker processes or replicas may share.
        slot = process_slots.claim(rt.settings.settlement_journal_path())
        rt.settings = replace(rt.settings, settlement_journal_dir=slot.folder)
        rt.settlements = Settlements.for_runtime(rt)
        await rt.settlements.start()  # applies what a previous process journaled and never wrote
        metrics.forget_dead_processes()
        await rt.leadership.start()
        # Until its first pass (or, led by another process, until that one's first pass) it looks every 0.25 s.
        tasks = [asyncio.create_task(_every(lambda: rt.reconciler.interval if rt.first_sync_done else 0.25,
                                            first_and_later_syncs, "reconciler")),
                 asyncio.create_task(_every(lambda: settings.expiry_sweep_seconds, sweep_expired, "expiry sweep")),
                 # Just after each sampling window ends, so its summaries are written once it is over.
                 asyncio.create_task(_every(lambda: rt.guards.refusals.until_window_ends() + WINDOW_END_SLACK,
                                            audit_upkeep, "audit upkeep"))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await rt.leadership.stop()
            await rt.settlements.stop()
            slot.release()
            await rt.upstream.close()
            await rt.chat_store.close()
            rt.db_threads.shutdown(wait=False)
            db.dispose()

    app = FastAPI(title="AI gateway (reference)", version="1.0.0", lifespan=lifespan,
                  description="The reference gateway; it keeps the contract in docs/contract.md.")
    app.state.runtime = rt
    errors.install(app)
    # Model traffic first: routes are matched in order, and chat completions are most of what a gateway serves.
    for module in (chat, health, auth, orgs, people, keys, billing, audit_log, config):
        app.include_router(module.router)
    for module in (signing_keys, reservation_reads):  # identity and tenant reads (issue 4)
        app.include_router(module.router)
    app.include_router(admin_cleanup.router)  # retiring orgs and people: what a run created (issue 17)
    app.include_router(billing_admin.router)  # dead letters, voids, circuit breakers (issue 16)
    app.add_middleware(GatewayMiddleware, max_body_bytes=settings.max_body_bytes, addresses=rt.guards.addresses,
                       metrics_token=settings.metrics_token,
                       process_name=rt.process_name if settings.mode == "test" else None)
    return app


async def _forget_connections(rt: Runtime) -> None:
    """The database ended this process's sessions: its pools' idle connections are dead too; drop them."""
    log.warning("the database ended this process's connections; its idle pooled connections are dropped")
    rt.db.engine.dispose()
    if rt.chat_store is not None:
        await rt.chat_store.close()


def _a_pass_was_made(db: Database) -> bool:
    """Whether any process has made a reconcile pass on this database (the leader's first one, say)."""
    with db.sessions() as session:
        state = session.get(ConfigState, 1)
    return state is not None and state.last_attempt_at is not None
