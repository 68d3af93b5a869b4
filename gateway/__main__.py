"""Run the gateway: `python -m gateway` migrates the database, then serves on GATEWAY_HOST:GATEWAY_PORT."""
from __future__ import annotations

import logging
import os
import time

import uvicorn

from gateway import logs
from gateway.app import create_app
from gateway.migrate import upgrade
from gateway.settings import Settings


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


def main() -> None:
    logs.configure()
    settings = Settings.from_env()
    wait_for_database(settings.database_url, float(os.environ.get("DATABASE_WAIT_SECONDS") or 0))
    upgrade(settings.database_url)
    logs.configure()  # alembic's fileConfig replaced our handlers
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                access_log=False, lifespan="on", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
