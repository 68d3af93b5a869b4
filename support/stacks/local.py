"""The embedded stack: the model backend stub and the gateway as child processes on free loopback ports,
with SQLite in a temporary folder, or a fresh PostgreSQL database when `database_url` names a server."""
from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

from support.harness.config import SuiteSetupError
from support.tokens.signing_keys import generate_keys, require_keys_dir
from support.stacks import config_repo, replicas
from support.stacks.base import GATEWAY_TEST_SETTINGS, Endpoints, Stack
from support.stacks.processes import ChildProcess, free_port

ROOT = Path(__file__).resolve().parents[2]


class LocalStack(Stack):
    name = "local"

    def __init__(self, config):
        super().__init__(config)
        self.run_dir: Path | None = None
        self.processes: dict[str, ChildProcess] = {}
        self.created_database: str | None = None
        self.server_url: str | None = None

    def launch(self) -> None:
        """Start the model stub and the gateway without waiting for them: up() waits. The gateway takes about a
        second to import, which a behave run spends loading its hooks, steps and features (support/runner.py)."""
        if self.processes:
            return
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"acceptance-{self.config.run_id}-"))
        keys_dir = self._keys()
        database_url = self._database()
        stub_port, gateway_port = free_port(), free_port()
        stub_url = f"http://127.0.0.1:{stub_port}"
        repo = config_repo.create(self.run_dir / "config-repo", stub_url)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        self.processes["model-stub"] = ChildProcess(
            "model-stub", [sys.executable, "-m", "model_stub", "--host", "127.0.0.1", "--port", str(stub_port)],
            env=env, log_path=self.run_dir / "model-stub.log", cwd=ROOT)
        gateway_env = {**env, "DATABASE_URL": database_url, "KEYS_DIR": str(keys_dir), "CONFIG_REPO": str(repo),
                       "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(gateway_port), **GATEWAY_TEST_SETTINGS,
                       "GATEWAY_WORKERS": str(self.config.gateway_workers),
                       "SETTLEMENT_JOURNAL_DIR": str(self.run_dir / "settlements")}
        self.processes["gateway"] = ChildProcess(
            "gateway", [sys.executable, "-m", "gateway"], env=gateway_env,
            standby_env={**gateway_env, "GATEWAY_STANDBY": "1"}, log_path=self.run_dir / "gateway.log", cwd=ROOT)
        if self.warm_restarts:  # the gateway is forked by its standby: one import serves every start
            self.processes["gateway"].start_standby()
        for process in self.processes.values():
            process.start()
        self.endpoints = Endpoints(f"http://127.0.0.1:{gateway_port}", database_url, str(keys_dir), stub_url, str(repo))

    def up(self) -> Endpoints:
        self.launch()
        self._wait_every_process(self.endpoints.base_url)
        return self.endpoints

    def _fail_if_exited(self) -> None:
        for process in self.processes.values():
            if not process.running():
                raise SuiteSetupError(f"the {process.name} process {process.describe()} while starting; its last "
                                      f"lines: {' | '.join(process.tail(8))}")

    def _keys(self) -> Path:
        if self.config.keys_dir:
            return require_keys_dir(self.config.keys_dir)
        return generate_keys(self.run_dir / "keys")

    def _database(self) -> str:
        if not self.config.database_url or self.config.database_url.startswith("sqlite"):
            return self.config.database_url or f"sqlite:///{self.run_dir / 'gateway.db'}"
        from sqlalchemy import create_engine, text  # a SQLite stack starts without SQLAlchemy: it starts sooner
        from sqlalchemy.engine import make_url

        server = make_url(self.config.database_url)
        name = f"acceptance_{self.config.run_id}_{secrets.token_hex(3)}".lower()
        self.server_url = server.render_as_string(hide_password=False)
        engine = create_engine(self.server_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except Exception as exc:
            raise SuiteSetupError(f"cannot create a database on {server.render_as_string()} "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0]}); check -D database_url")
        finally:
            engine.dispose()
        self.created_database = name
        return server.set(database=name).render_as_string(hide_password=False)

    def down(self) -> None:
        if getattr(self, "_outage", None) is not None:
            self.start_database()
        for process in reversed(list(self.processes.values())):
            process.ask_to_stop()  # all at once: each takes a fifth of a second to wind down
        for process in reversed(list(self.processes.values())):
            process.stop()
            process.drop_standby()  # after: a gateway forked by the standby ends with it, without winding down
        if self.created_database:
            from sqlalchemy import create_engine, text

            engine = create_engine(self.server_url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.created_database}" WITH (FORCE)'))
            engine.dispose()
            self.created_database = None
        if self.run_dir and not self.config.keep_stack:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # ---- faults the resilience features inject: this stack owns its gateway process and its database --------------

    def gateway_pid(self) -> int | None:
        process = self.processes["gateway"].process
        return process.pid if process is not None and self.processes["gateway"].running() else None

    def kill_gateway(self) -> int | None:
        """SIGKILL the serving gateway at once (no graceful shutdown); returns the pid that was killed."""
        pid = self.gateway_pid()
        self.processes["gateway"].start_standby()  # if it had died: a head start on the restart
        self.processes["gateway"].kill()
        return pid

    def restart_gateway(self) -> None:
        """Start the gateway again on the same port with the same database and settings (forked by the warm
        standby, else a cold start); wait until it is ready."""
        gateway = self.processes["gateway"]
        if gateway.running():
            gateway.stop()
        gateway.start()
        self._wait_every_process(self.endpoints.base_url)
        if self.warm_restarts:
            gateway.start_standby()  # if it had died: only now, as its imports would take CPU from this start

    def _wait_every_process(self, base_url: str) -> None:
        """Ready, and every worker process answering: one ready worker answers /readyz while another is still
        importing, and a burst sent then would meet one process only."""
        self.wait_ready(base_url, self.config.ready_timeout, still_starting=self._fail_if_exited)
        if self.config.gateway_workers > 1:
            replicas.wait_balanced(base_url, self.config.gateway_workers, self.config.ready_timeout)

    def stop_database(self) -> str:
        """Make the gateway's database unavailable until start_database(); returns how, in a few words."""
        if getattr(self, "_outage", None) is None:
            from support.stacks.outages import database_outage

            self._outage = database_outage(self.endpoints.database_url, self.server_url, self.created_database)
            self._outage.begin()
        return self._outage.how

    def start_database(self) -> None:
        outage, self._outage = getattr(self, "_outage", None), None
        if outage is not None:
            outage.end()

    def logs(self, lines: int = 40) -> dict[str, list[str]]:
        return {name: process.tail(lines) for name, process in self.processes.items()}

    def state(self) -> dict[str, str]:
        return {name: process.describe() for name, process in self.processes.items()}
