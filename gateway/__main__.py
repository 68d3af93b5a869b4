"""Run the gateway: `python -m gateway` migrates the database, then serves on GATEWAY_HOST:GATEWAY_PORT, in one
process or, with GATEWAY_WORKERS=N (PostgreSQL only), in N worker processes sharing the port (uvicorn's
supervisor restarts a worker that dies). Several processes share their metrics through a fresh
PROMETHEUS_MULTIPROC_DIR made for each start (docs/contract.md, "Many processes and replicas"). With GATEWAY_STANDBY=1
it is a warm standby: it loads what serving needs, then forks a gateway that starts for each line on stdin."""
from __future__ import annotations

import ast
import atexit
import ctypes
import logging
import multiprocessing
import os
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

import uvicorn

from gateway import logs
from gateway.settings import Settings

MIGRATION_LOCK = int.from_bytes(b"gwmigrat", "big")  # replicas starting together migrate one after another
WORKER_APP = "gateway.__main__:worker_app"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
KEEP_ALIVE_SECONDS = 75


def wait_for_database(database_url: str, seconds: float) -> None:
    """With DATABASE_WAIT_SECONDS set (a container started beside its database), retry connecting until the
    database answers or the time is up; then migrate. Unset or 0: no waiting, a database down is an error."""
    if seconds <= 0:
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(database_url)
    deadline, delay, said = time.monotonic() + seconds, 0.05, False
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("select 1"))
                return
            except OperationalError as exc:
                if time.monotonic() + delay > deadline:
                    raise SystemExit(f"gateway: the database did not answer within DATABASE_WAIT_SECONDS={seconds:g}: "
                                     f"{str(exc.orig).strip().splitlines()[0]}") from None
                if not said:
                    logging.getLogger("gateway").info("waiting up to %g s for the database to answer", seconds)
                    said = True
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
    finally:
        engine.dispose()


def newest_revision() -> str | None:
    """The newest migration's revision, read from the `revision = ...` and `down_revision = ...` lines of the
    migration files (no Alembic needed); None when they are not one plain line of revisions (Alembic decides)."""
    revisions, parents = set(), set()
    for path in (Path(__file__).resolve().parent / "migrations" / "versions").glob("*.py"):
        found = dict(line.split(" = ", 1) for line in path.read_text().splitlines()
                     if line.startswith(("revision = ", "down_revision = ")))
        try:
            revision, parent = (ast.literal_eval(found[name]) for name in ("revision", "down_revision"))
        except (KeyError, ValueError, SyntaxError):
            return None
        if not isinstance(revision, str) or not isinstance(parent, (str, type(None))):
            return None
        revisions.add(revision)
        parents.add(parent)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and len(parents) == len(revisions) else None


def at_newest_revision(database_url: str) -> bool:
    """Whether the schema is already at the newest migration: a restart then skips loading Alembic, a fifth of the
    time to ready. Anything else (a new database, an older schema, an unreadable version) says no."""
    from sqlalchemy import create_engine, text

    newest = newest_revision()
    if newest is None:
        return False
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))] == [newest]
    except Exception:  # no version table yet, or no database: Alembic says what is wrong
        return False
    finally:
        engine.dispose()


def migrate(database_url: str) -> None:
    """Upgrade the schema; on PostgreSQL under an advisory lock, so replicas that start together take turns (the
    later ones find it at head)."""
    if at_newest_revision(database_url):
        return
    from gateway.migrate import upgrade

    if not database_url.startswith("postgresql"):
        upgrade(database_url)
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            try:
                upgrade(database_url)
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
    finally:
        engine.dispose()


@contextmanager
def migrating_meanwhile(database_url: str):
    """Migrate in a child process while the body runs (importing the app takes as long as Alembic does, and a
    machine has a second core); wait for it at the end. A failed migration ends the start with its traceback in the
    log. A schema already at head needs no child."""
    if at_newest_revision(database_url):
        yield
        return
    child = os.fork()
    if child == 0:  # os._exit: the parent's atexit handlers are not the child's to run
        try:
            migrate(database_url)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        os._exit(0)
    try:
        yield
    finally:
        _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("gateway: migrating the database failed (the traceback is above); nothing was served")


def fresh_metrics_dir() -> None:
    """Several processes count into files of one folder: PROMETHEUS_MULTIPROC_DIR emptied if given, else a new
    temporary folder removed at exit. Set before the app (and prometheus-client) is imported, so every worker,
    started from this process, counts there."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        folder = Path(given)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return
    folder = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    atexit.register(shutil.rmtree, folder, True)


def die_with_parent(how: int = signal.SIGKILL) -> None:
    """A worker dies when its supervisor does (Linux PR_SET_PDEATHSIG), so a supervisor killed outright leaves no
    orphan serving on the port."""
    if not sys.platform.startswith("linux"):
        return
    parent = multiprocessing.parent_process()
    expected = parent.pid if parent is not None else os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, how)
    if os.getppid() != expected:  # it died before the request took effect
        os._exit(1)


def worker_app():
    """The app of one worker process (uvicorn's factory, called in each worker it starts)."""
    from gateway.app import create_app

    die_with_parent()
    logs.configure()
    return create_app()


def load_for_serving() -> None:
    """Import what serving needs, as a warm standby does before it forks the gateways it is asked for."""
    try:
        workers = int(os.environ.get("GATEWAY_WORKERS") or 1)
    except ValueError:
        workers = 1  # Settings.from_env says what is wrong, in the fork
    if workers > 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Metrics counted in files: prometheus-client only once fresh_metrics_dir() has run, and the gateway's own
        # modules (which open those files) in each worker, as on a cold start.
        from gateway import reuse_port

        reuse_port.preload(but=("prometheus_client",))
    else:
        import gateway.app  # noqa: F401  (and with it fastapi, sqlalchemy, the routers)
        import uvicorn.lifespan.on  # noqa: F401  (what uvicorn.run imports as it starts)
        import uvicorn.loops.auto  # noqa: F401
        import uvicorn.protocols.http.auto  # noqa: F401


def serve_forks_as_standby() -> bool:
    """A warm standby, as a process supervisor keeps one to replace a gateway that dies: it loads what serving needs
    once (and migrates the database meanwhile), then forks a gateway for each line on stdin (a restart then takes a
    tenth of a second, not a second, and costs no new imports), and stays loaded for the next. A fork returns True
    and starts: reads the settings, migrates, binds the port; it is the leader of a process group of its own, and
    ends when the standby does.
    The standby writes "started PID" for each fork, and "ended PID CODE" once one ends, to the file descriptor
    GATEWAY_STANDBY_REPLIES when given. It returns False when stdin ends: whoever started it went away."""
    database_url = os.environ.get("DATABASE_URL")
    # The first fork serves at once: its schema is migrated while the code loads. On a database given time to come
    # up (DATABASE_WAIT_SECONDS) the fork migrates, once it answers.
    early = database_url and (os.environ.get("DATABASE_WAIT_SECONDS") or "0") in ("0", "0.0")
    with migrating_meanwhile(database_url) if early else nullcontext():
        load_for_serving()
    replies = int(os.environ.get("GATEWAY_STANDBY_REPLIES") or -1)

    def reply(line: str) -> None:
        if replies >= 0:
            with suppress(OSError):
                os.write(replies, line.encode() + b"\n")

    woken, wake = os.pipe()  # a child's end wakes the loop below (SIGCHLD through the wake-up fd)
    os.set_blocking(wake, False)
    signal.set_wakeup_fd(wake)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    asked = b""
    while True:
        readable, _, _ = select.select([sys.stdin.fileno(), woken], [], [])
        if woken in readable:
            os.read(woken, 4096)
            for pid, status in _ended_children():
                reply(f"ended {pid} {os.waitstatus_to_exitcode(status)}")
        if sys.stdin.fileno() not in readable:
            continue
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            return False
        asked += chunk
        while b"\n" in asked:
            _, asked = asked.split(b"\n", 1)
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (woken, wake, *([replies] if replies >= 0 else [])):
                    os.close(fd)
                nothing = os.open(os.devnull, os.O_RDONLY)
                os.dup2(nothing, sys.stdin.fileno())  # the standby's stdin is not the gateway's to read
                os.close(nothing)
                os.setsid()
                die_with_parent(signal.SIGTERM)
                return True
            reply(f"started {pid}")


def _ended_children() -> list[tuple[int, int]]:
    ended = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.append((pid, status))


def main() -> None:
    logs.configure()
    if os.environ.get("GATEWAY_STANDBY") == "1" and not serve_forks_as_standby():
        return
    settings = Settings.from_env()
    wait_for_database(settings.database_url, float(os.environ.get("DATABASE_WAIT_SECONDS") or 0))
    # An idle keep-alive connection is kept longer than a load balancer keeps its own to the gateway idle (uvicorn's
    # 5 s would close one just as the balancer sends a request on it, which then gets no answer).
    serving = dict(host=settings.host, port=settings.port, log_config=None, access_log=False, lifespan="on",
                   timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_SECONDS)
    if settings.workers > 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        fresh_metrics_dir()
    if settings.workers > 1:
        migrate(settings.database_url)
        logs.configure()  # alembic's fileConfig replaced our handlers
        from gateway import reuse_port  # a socket per worker, so that the kernel spreads connections over them

        reuse_port.run(uvicorn.Config(WORKER_APP, factory=True, workers=settings.workers, **serving))
        return
    with migrating_meanwhile(settings.database_url):
        from gateway.app import create_app
    uvicorn.run(create_app(settings), **serving)


if __name__ == "__main__":
    main()
