"""The settlement journal: what an answered chat request owes is on disk before the gateway writes it to the
database, and is written there exactly once, whatever fails in between.

* `SettlementJournal`: a folder of append-only JSON-lines segments, one gateway process's own (a lock file keeps a
  second process out). `owe(entry)` appends an entry and returns once it is on disk (fdatasync; requests that owe
  at the same moment share one: group commit). `done(id)` appends a mark without waiting for the disk: a mark lost
  in a crash only makes the worker look at the entry again, and the database says it was applied.
* The chat path (gateway/routers/chat.py) journals the charge, then settles it in the database as before; on
  success it marks it done. On any failure (the database unavailable, the reservation expired meanwhile, a
  constraint) the entry goes to the worker, and the client gets its answer all the same.
* `Settlements` (the worker): applies entries with exponential backoff; at start-up it reads the journal and
  applies every entry without a done mark (a gateway killed between the answer and the commit).
* Exactly once: the database decides, in one transaction per entry. `apply` finalizes the reservation only while it
  is pending (a conditional UPDATE); a reservation past its time to live is expired and charged late, and an
  expired or released one is charged late only while it has no charge (a conditional UPDATE on actual_micros).
  The ledger entry, the request's audit event and its Idempotency-Key record commit with the move. An entry
  applied twice (a lost done mark, a commit whose answer never arrived) finds its move made and writes nothing.
* Dead letters: an entry whose apply fails while the database answers (not an outage: outages are retried for as
  long as they last) is tried SETTLEMENT_MAX_TRIES times, then kept in `settlement_dead_letters` and marked done
  here; a platform admin lists and replays it (gateway/routers/billing_admin.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Counter, Gauge
from sqlalchemy.exc import IntegrityError

from gateway import audit, context
from gateway.errors import DATABASE_UNAVAILABLE, ApiError
from gateway.logs import log as log_fields
from gateway.metrics import REGISTRY
from gateway.models import Reservation, SettlementDeadLetter, utcnow
from gateway.security import new_id
from gateway.services import idempotency, ledger

log = logging.getLogger("gateway.settlements")

RETRIES = Counter("gateway_settlement_retries_total", "Settlements of the journal tried again after a failed try",
                  registry=REGISTRY)
DEAD_LETTERS = Counter("gateway_settlement_dead_letters_total", "Settlements of the journal that kept failing and "
                       "became dead letters", registry=REGISTRY)
WAITING = Gauge("gateway_settlement_journal_waiting", "Settlements of the journal waiting for the worker to apply "
                "them (this process)", registry=REGISTRY)
OUTCOMES = ("finalized", "late_charge", "already_applied")


class SettlementFailed(Exception):
    """The database answered, but would not apply the settlement (a constraint, a row gone): counted as a try."""


# ---- the entry ------------------------------------------------------------------------------------------------------

def new_entry(reservation_id: str, actual: int, *, actor: audit.Actor, target: str, org: str, outcome: str,
              reason: str | None, details: dict, idempotency_record: dict | None = None) -> dict:
    """What a chat request owes, as the journal keeps it: the charge, and the audit event and Idempotency-Key
    answer that commit with it (under the request's own ids)."""
    return {"id": new_id("se"), "reservation_id": reservation_id, "actual_micros": actual,
            "owed_at": utcnow().isoformat(), "request_id": context.current_request_id(),
            "trace_id": context.current_trace_id(),
            "audit": {"actor_type": actor.type, "actor_id": actor.id, "target": target, "org": org,
                      "outcome": outcome, "reason": reason, "details": details},
            "idempotency": idempotency_record}


@contextlib.contextmanager
def _as_request(entry: dict):
    """The entry's request ids in force, so its audit event reads as the request's own."""
    token = context.set_current(context.Correlation(entry.get("request_id") or f"se-{entry['id']}",
                                                    entry.get("trace_id") or "0" * 32))
    try:
        yield
    finally:
        context.reset_current(token)


def apply(db, entry: dict) -> str:
    """Write the entry's charge, audit event and Idempotency-Key answer in one transaction, unless its charge is
    already there: 'finalized', 'late_charge' or 'already_applied'. SettlementFailed when the database refuses it."""
    rid, actual = entry["reservation_id"], entry["actual_micros"]
    with _as_request(entry):
        try:
            with db.transaction() as session:
                outcome = _charge(session, rid, actual, entry.get("request_id"))
                if outcome != "already_applied":
                    _audit(session, entry, outcome)
                if entry.get("idempotency"):
                    record = entry["idempotency"]
                    idempotency.complete_in(session, record["scope"], record["key"], record["status"],
                                            record["stored"])
            return outcome
        except (*DATABASE_UNAVAILABLE, SettlementFailed):
            raise
        except Exception as exc:  # the database answered and refused: a try is spent
            text = str(exc).splitlines()[0][:300] if str(exc) else ""
            raise SettlementFailed(f"{type(exc).__name__}: {text}") from exc


def _charge(session, reservation_id: str, actual: int, request_id: str | None) -> str:
    reservation = session.get(Reservation, reservation_id)
    if reservation is None:
        raise SettlementFailed(f"reservation {reservation_id} does not exist")
    if reservation.status == "pending":
        try:
            ledger.finalize(session, reservation_id, actual, request_id, beyond_hold=True)
            return "finalized"
        except ApiError:  # past its time to live: it is expired, like any other, then charged late
            ledger.expire_one(session, reservation)
    return "late_charge" if ledger.charge_late(session, reservation_id, actual, request_id) else "already_applied"


def _audit(session, entry: dict, outcome: str) -> None:
    event = entry["audit"]
    reason, details = event.get("reason"), dict(event.get("details") or {})
    if outcome == "late_charge":
        details["late_charge"] = True
        reason = "; ".join(filter(None, [reason, "charged late: the hold had gone back before the charge could be "
                                                 "written (the database was unavailable or the gateway restarted)"]))
    audit.record(session, audit.Actor(event["actor_type"], event["actor_id"]), "chat.completion",
                 target=event["target"], org=event["org"], outcome=event["outcome"], reason=reason, details=details)


# ---- dead letters ---------------------------------------------------------------------------------------------------

def bury(db, entry: dict, error: str, tries: int) -> None:
    """Keep the entry as a dead letter (once: its id is the entry's), and say so in the platform's audit log."""
    account_id = None
    try:
        with db.transaction() as session:
            reservation = session.get(Reservation, entry["reservation_id"])
            account_id = reservation.account_id if reservation else None
            session.add(SettlementDeadLetter(
                id=f"dl_{entry['id']}", reservation_id=entry["reservation_id"], account_id=account_id,
                org=entry["audit"].get("org"), request_id=entry.get("request_id"), amount_micros=entry["actual_micros"],
                settlement=entry, error=error, tries=tries, state="dead"))
            session.flush()
            audit.record(session, audit.SYSTEM, "billing.dead_letter", target=f"reservation:{entry['reservation_id']}",
                         org=entry["audit"].get("org"), outcome="failed",
                         reason=f"the settlement of request {entry.get('request_id')} failed {tries} times and was "
                                f"set aside for a platform admin to replay: {error}",
                         details={"dead_letter_id": f"dl_{entry['id']}", "amount_micros": entry["actual_micros"],
                                  "request_id": entry.get("request_id")})
    except IntegrityError:  # buried before (the done mark was lost): nothing to add
        return


def replay(db, dead_letter_id: str, admin: audit.Actor) -> tuple[SettlementDeadLetter, str]:
    """Apply a dead letter's settlement now: (the dead letter, marked replayed, and how it applied). A dead letter
    replayed before is 409; one that fails again stays dead (409, with the database's reason)."""
    with db.sessions() as session:
        letter = session.get(SettlementDeadLetter, dead_letter_id)
    if letter is None:
        raise ApiError(404, "dead_letter_not_found", f"Dead letter '{dead_letter_id}' does not exist.")
    if letter.state != "dead":
        raise ApiError(409, "dead_letter_replayed", f"Dead letter '{dead_letter_id}' was replayed already (at "
                       f"{ledger.as_utc(letter.replayed_at).isoformat()}); its settlement applies once.")
    try:
        outcome = apply(db, letter.settlement)
    except SettlementFailed as exc:
        with db.transaction() as session:
            session.get(SettlementDeadLetter, dead_letter_id).tries += 1
        raise ApiError(409, "dead_letter_failed", f"Dead letter '{dead_letter_id}' still cannot be applied: {exc}. "
                       f"It stays set aside; replay it once the cause is fixed.")
    with db.transaction() as session:
        letter = session.get(SettlementDeadLetter, dead_letter_id)
        letter.state, letter.replayed_at, letter.replayed_by = "replayed", utcnow(), admin.id
    return letter, outcome


def dead_letter_json(letter: SettlementDeadLetter) -> dict:
    stamp = lambda value: ledger.as_utc(value).isoformat() if value else None  # noqa: E731
    return {"id": letter.id, "state": letter.state, "reservation_id": letter.reservation_id,
            "account_id": letter.account_id, "org": letter.org, "request_id": letter.request_id,
            "amount_micros": letter.amount_micros, "error": letter.error, "tries": letter.tries,
            "created_at": stamp(letter.created_at), "replayed_at": stamp(letter.replayed_at),
            "replayed_by": letter.replayed_by}


# ---- the journal on disk --------------------------------------------------------------------------------------------

class JournalInUse(SystemExit):
    pass


class SettlementJournal:
    """Append-only JSON-lines segments in `folder` (see the module's docstring). Writes happen on the event loop
    (a few hundred bytes into the page cache); only the fdatasync runs on a thread of its own."""

    SEGMENT_BYTES = 4 * 1024 * 1024

    def __init__(self, folder: Path, *, durable: bool = True):
        self.folder = Path(folder)
        self.durable = durable
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._segment: Path | None = None
        self._size = 0
        self._open: dict[Path, set[str]] = {}  # segment -> ids owed there and not done
        self._where: dict[str, Path] = {}  # id -> its segment
        self._written = self._synced = 0  # writes made, writes known to be on disk
        self._syncing: asyncio.Future | None = None
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="settlement-journal")

    def open(self) -> list[dict]:
        """Take the folder, and return the entries owed and never marked done (oldest first)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise JournalInUse(f"gateway: the settlement journal {self.folder} is in use by another gateway process; "
                               f"give each process a SETTLEMENT_JOURNAL_DIR of its own") from None
        owed: dict[str, tuple[Path, dict]] = {}
        segments = sorted(self.folder.glob("segment-*.jsonl"), key=_segment_number)
        for segment in segments:
            for entry in _read_lines(segment):
                if entry.get("op") == "done":
                    owed.pop(entry.get("id"), None)
                elif entry.get("op") == "owe" and entry.get("id"):
                    owed[entry["id"]] = (segment, entry["entry"])
        for entry_id, (segment, _) in owed.items():
            self._open.setdefault(segment, set()).add(entry_id)
            self._where[entry_id] = segment
        for segment in segments:
            if segment not in self._open:
                segment.unlink()
        self._start_segment(_segment_number(segments[-1]) + 1 if segments else 1)
        return [entry for _, entry in owed.values()]

    def _start_segment(self, number: int) -> None:
        self._segment = self.folder / f"segment-{number:08d}.jsonl"
        self._fd = os.open(self._segment, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0
        self._open.setdefault(self._segment, set())
        if self.durable:  # the new file's name is on disk too
            folder = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)

    def _write(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str) + "\n").encode("utf-8")
        if self._size + len(line) > self.SEGMENT_BYTES and self._syncing is None:
            self._rotate()
        os.write(self._fd, line)
        self._size += len(line)
        self._written += 1

    def _rotate(self) -> None:
        old, old_segment = self._fd, self._segment
        if self.durable:
            os.fdatasync(old)  # rare (every few MiB): what was written there is on disk before it is left
        self._synced = self._written
        os.close(old)
        self._start_segment(_segment_number(old_segment) + 1)
        self._forget_if_settled(old_segment)

    async def owe(self, entry: dict) -> None:
        self._write({"op": "owe", "id": entry["id"], "entry": entry})
        self._open[self._segment].add(entry["id"])
        self._where[entry["id"]] = self._segment
        if self.durable:
            await self._sync(self._written)

    def done(self, entry_id: str) -> None:
        segment = self._where.pop(entry_id, None)
        if segment is None:
            return
        self._write({"op": "done", "id": entry_id})
        self._open.get(segment, set()).discard(entry_id)
        self._forget_if_settled(segment)

    def _forget_if_settled(self, segment: Path) -> None:
        if segment != self._segment and not self._open.get(segment):
            self._open.pop(segment, None)
            with contextlib.suppress(FileNotFoundError):
                segment.unlink()

    async def _sync(self, target: int) -> None:
        """Return once write number `target` is on disk; one fdatasync covers every write made before it starts."""
        while self._synced < target:
            if self._syncing is None:
                self._syncing = asyncio.ensure_future(self._sync_once())
            await asyncio.shield(self._syncing)

    async def _sync_once(self) -> None:
        try:
            upto = self._written
            await asyncio.get_running_loop().run_in_executor(self._disk, os.fdatasync, self._fd)
            self._synced = max(self._synced, upto)
        finally:
            self._syncing = None

    @property
    def waiting(self) -> int:
        return len(self._where)

    def close(self) -> None:
        self._disk.shutdown(wait=True)
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None


def _segment_number(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


def _read_lines(segment: Path) -> list[dict]:
    records = []
    with open(segment, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
            except ValueError:  # a line cut short by a crash while it was written: it was never acknowledged
                log.warning("settlement journal %s line %d is not whole; skipped", segment.name, number)
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


# ---- the worker -----------------------------------------------------------------------------------------------------

@dataclass
class Waiting:
    entry: dict
    due: float = 0.0  # time.monotonic() when it is tried next
    attempts: int = 0  # tries so far (backoff)
    failures: int = 0  # tries the database refused (toward a dead letter)
    error: str | None = None
    bury: bool = False  # it failed SETTLEMENT_MAX_TRIES times: keep it as a dead letter


@dataclass
class Settlements:
    """The journal and the worker that applies what it holds (one per gateway process)."""
    rt: object  # gateway.runtime.Runtime
    journal: SettlementJournal
    waiting: dict[str, Waiting] = field(default_factory=dict)
    _wake: asyncio.Event | None = None
    _task: asyncio.Task | None = None

    @classmethod
    def for_runtime(cls, rt) -> Settlements:
        settings = rt.settings
        return cls(rt, SettlementJournal(settings.settlement_journal_path(), durable=settings.settlement_journal_fsync))

    async def start(self) -> None:
        recovered = await asyncio.get_running_loop().run_in_executor(None, self.journal.open)
        self._wake = asyncio.Event()
        for entry in recovered:
            self.waiting[entry["id"]] = Waiting(entry)
        if recovered:
            log.warning("the settlement journal holds %d settlement(s) not yet applied; applying them", len(recovered))
        WAITING.set(len(self.waiting))
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.journal.close()

    async def owe(self, entry: dict) -> None:
        await self.journal.owe(entry)

    def settled(self, entry: dict) -> None:
        self.journal.done(entry["id"])

    def hand_over(self, entry: dict, why: str) -> None:
        """The chat path could not settle the entry: the worker applies it (the client is answered meanwhile)."""
        log_fields(log, logging.WARNING, "a settlement could not be written; the journal will apply it",
                   reservation_id=entry["reservation_id"], settlement_id=entry["id"], error=why)
        self.waiting[entry["id"]] = Waiting(entry, due=time.monotonic(), error=why)
        WAITING.set(len(self.waiting))
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            due = [w for w in list(self.waiting.values()) if w.due <= now]
            for item in due:
                await self._try(item)
            WAITING.set(len(self.waiting))
            later = [w.due for w in self.waiting.values()]
            timeout = max(0.0, min(later) - time.monotonic()) if later else None
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _try(self, item: Waiting) -> None:
        settings = self.rt.settings
        entry = item.entry
        if item.attempts:
            RETRIES.inc()
        item.attempts += 1
        try:
            if item.bury:
                await self.rt.in_db_thread(bury, self.rt.db, entry, item.error or "unknown", item.failures)
                DEAD_LETTERS.inc()
                log_fields(log, logging.ERROR, "a settlement kept failing and became a dead letter",
                           reservation_id=entry["reservation_id"], settlement_id=entry["id"], error=item.error)
            else:
                outcome = await self.rt.in_db_thread(apply, self.rt.db, entry)
                log_fields(log, logging.INFO, "the journal applied a settlement", outcome=outcome,
                           reservation_id=entry["reservation_id"], settlement_id=entry["id"])
        except DATABASE_UNAVAILABLE as exc:  # an outage: tried again for as long as it lasts
            item.error = f"the database is unavailable ({type(exc).__name__})"
        except SettlementFailed as exc:
            item.failures += 1
            item.error = str(exc)
            item.bury = item.failures >= settings.settlement_max_tries
            log_fields(log, logging.WARNING, "the database refused a settlement of the journal",
                       reservation_id=entry["reservation_id"], settlement_id=entry["id"], error=item.error,
                       failures=item.failures)
        except Exception as exc:  # a bug: logged, and tried again later rather than lost
            item.error = f"{type(exc).__name__}: {exc}"
            log.exception("applying settlement %s failed", entry["id"])
        else:
            self.waiting.pop(entry["id"], None)
            self.journal.done(entry["id"])
            return
        delay = settings.settlement_retry_seconds * 2 ** min(item.attempts - 1, 30)
        item.due = time.monotonic() + min(delay, settings.settlement_retry_max_seconds)
