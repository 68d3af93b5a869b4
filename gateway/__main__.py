"""Run the gateway: `python -m gateway` migrates the database, then serves on GATEWAY_HOST:GATEWAY_PORT."""
from __future__ import annotations

import uvicorn

from gateway import logs
from gateway.app import create_app
from gateway.migrate import upgrade
from gateway.settings import Settings


def main() -> None:
    logs.configure()
    settings = Settings.from_env()
    upgrade(settings.database_url)
    logs.configure()  # alembic's fileConfig replaced our handlers
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                access_log=False, lifespan="on", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
