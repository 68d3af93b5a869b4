"""The Docker Compose stack: gateway replicas behind a load balancer (HAProxy), two model backend stubs and
PostgreSQL in containers (compose/).

One compose project per run (`acc-<run id><worker>`), so parallel runs never meet. `up()` builds the gateway
image when its sources changed (a digest of them is kept as an image label), starts the project, and waits
until every gateway replica answers /readyz on its published port and the load balancer has sent a request to
each, all within a deadline. The suite talks to the load balancer; it reaches every service through ports
published on 127.0.0.1 (the engine picks them); the gateway reaches the stub by its service name, so the model
backend URLs the suite seeds use `backend_base_url`, not `stub_url`. `-D gateway_replicas` (default 2) and
`-D gateway_workers` say how many replicas, of how many processes; a replica can be killed and started again
(features/scale).

`down()` removes the project with its volume and network (`down -v --remove-orphans`); it is idempotent and
also runs on SIGTERM/SIGHUP and at exit, so a crash or Ctrl-C leaves nothing behind.

Works with compose v2 (`docker compose`) and v1 (`docker-compose`). Environment knobs (all optional):
DOCKER (the docker client), DOCKER_COMPOSE (the compose command, e.g. "docker-compose"), GATEWAY_IMAGE,
BASE_IMAGE, POSTGRES_IMAGE, LB_IMAGE, BUILD_NETWORK, WHEELS_DIR (see compose/docker-compose.yml). When BASE_IMAGE,
POSTGRES_IMAGE or LB_IMAGE is unset and the registry-free images of scripts/docker-images exist, those are used (and
the build runs with --network none).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from support.harness.config import SuiteSetupError
from support.tokens.signing_keys import generate_keys, require_keys_dir
from support.stacks import config_repo, replicas
from support.stacks.base import GATEWAY_TEST_SETTINGS, Endpoints, Stack
from support.harness.waits import WaitTimeout, wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
SERVICES = ("lb", "gateway", "db", "model-primary", "model-fallback")
GATEWAY = "gateway"  # the replicated service; its containers are named gateway-<n> in the stack's state
GATEWAY_IMAGE = "acceptance/gateway:dev"
OFFLINE_BASE_IMAGE = "acceptance/base-python:bookworm"  # made by scripts/docker-images
OFFLINE_POSTGRES_IMAGE = "acceptance/postgres:15"
STUB_IN_NETWORK = "http://model-primary:9000"  # the stub as the gateway container reaches it
# As on the embedded stack: the suite waits for reconciliation, expiry and upstream timeouts, so keep them short.
SOURCE_LABEL = "acceptance.source"
BUILD_TIMEOUT = 900.0  # a cold build from python:3.11-slim downloads and installs every requirement
UP_TIMEOUT = 120.0  # from `up` to a ready gateway (a first PostgreSQL start runs initdb), unless ready_timeout is more
DOWN_TIMEOUT = 120.0
CLI_TIMEOUT = 30.0


# ---- the Docker and compose command lines ---------------------------------------------------------------------------

def docker_client(environ=os.environ) -> str:
    """The docker CLI: $DOCKER, else the engine package's own /usr/bin/docker (a newer client elsewhere on PATH
    may speak an API the engine lacks), else `docker` on PATH."""
    if environ.get("DOCKER"):
        return environ["DOCKER"]
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    return shutil.which("docker") or "docker"


def _answers(argv: list[str], run) -> bool:
    try:
        return run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def compose_command(docker: str, environ=os.environ, run=None, which=None) -> list[str] | None:
    """The compose CLI to use: $DOCKER_COMPOSE, else the v2 plugin (`docker compose`), else v1 (`docker-compose`)."""
    run, which = run or subprocess.run, which or shutil.which
    if environ.get("DOCKER_COMPOSE"):
        return shlex.split(environ["DOCKER_COMPOSE"])
    if _answers([docker, "compose", "version"], run):
        return [docker, "compose"]
    v1 = which("docker-compose")
    if v1 and _answers([v1, "version"], run):
        return [v1]
    return None


def docker_unreachable(docker: str, run=subprocess.run) -> str | None:
    """Why the engine cannot be used (one short phrase), or None when `docker info` answers."""
    try:
        done = run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                   timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return f"no docker client at {docker}"
    except subprocess.TimeoutExpired:
        return f"`{docker} info` did not answer within {CLI_TIMEOUT:g} s"
    if done.returncode != 0 or not done.stdout.strip():
        said = " ".join((done.stderr or done.stdout).split())
        return f"`{docker} info` failed: {said[:200] or f'exit status {done.returncode}'}"
    return None


def project_name(run_id: str, worker: str = "") -> str:
    """A compose project name of this run: lower-case letters, digits, '-' and '_' only."""
    return "acc-" + (re.sub(r"[^a-z0-9_-]", "", f"{run_id}{worker}".lower()) or secrets.token_hex(4))


def source_digest(root: Path = ROOT, extra: str = "") -> str:
    """A digest of what the gateway image is built from: its Dockerfile, the gateway and model stub packages, the wheels' stamp."""
    digest = hashlib.sha256(extra.encode())
    files = [root / "compose" / "Dockerfile", root / ".dockerignore"]
    files += sorted(p for package in ("gateway", "model_stub") for p in (root / package).rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:32]


def _tail(text: str, lines: int = 15) -> str:
    kept = [line for line in (text or "").replace("\r", "\n").splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


# ---- the stack -------------------------------------------------------------------------------------------------------

class ComposeStack(Stack):
    name = "compose"

    def __init__(self, config):
        super().__init__(config)
        self.environ = dict(os.environ)
        self.docker = docker_client(self.environ)
        self.compose: list[str] | None = None
        self.project = project_name(config.run_id, config.worker)
        self.run_dir: Path | None = None
        self.env: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self._started = False  # compose may have created something: down() has work to do
        self._down_lock = threading.Lock()
        self._down_done = False
        self._old_handlers: dict[int, object] = {}

    # -- up --------------------------------------------------------------------------------------------------------

    def up(self) -> Endpoints:
        began = time.monotonic()
        reason = docker_unreachable(self.docker)
        if reason:
            raise SuiteSetupError(f"Docker is not reachable ({reason}); start the engine (scripts/docker-engine "
                                  f"start) or use -D stack=local")
        self.compose = compose_command(self.docker, self.environ)
        if not self.compose:
            raise SuiteSetupError("no Docker Compose CLI found (neither `docker compose` nor `docker-compose` "
                                  "answers); install one (scripts/docker-engine install) or use -D stack=local")
        if self.config.database_url:
            print("compose stack: ignoring -D database_url: the stack runs and seeds its own PostgreSQL container",
                  file=sys.stderr, flush=True)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"acceptance-{self.config.run_id}-"))
        keys_dir = self._keys()
        repo = config_repo.create(self.run_dir / "config-repo", STUB_IN_NETWORK)
        self.env = self._compose_env(keys_dir, repo)
        self._install_signal_handlers()

        self._build()
        deadline = time.monotonic() + max(UP_TIMEOUT, self.config.ready_timeout)
        started = time.monotonic()
        self._started = True
        self._compose("up", "-d", "--no-build", "--scale", f"{GATEWAY}={self.config.gateway_replicas}",
                      timeout=deadline - time.monotonic(), what="start the project")
        base_url = f"http://{self._port('lb', 8080)}"
        stub_url = f"http://{self._port('model-primary', 9000)}"
        replica_urls = self._replica_urls()
        for url in replica_urls:
            self.wait_ready(url, max(deadline - time.monotonic(), 1.0), still_starting=self._fail_if_exited)
        self.wait_ready(base_url, max(deadline - time.monotonic(), 1.0), still_starting=self._fail_if_exited)
        replicas.wait_balanced(base_url, self.config.gateway_replicas * self.config.gateway_workers,
                               max(deadline - time.monotonic(), 1.0))
        self._wait_stub(stub_url, max(deadline - time.monotonic(), 1.0))
        self.timings["up"] = time.monotonic() - started
        self.timings["total"] = time.monotonic() - began
        password = self.env["POSTGRES_PASSWORD"]
        database_url = f"postgresql+psycopg://postgres:{password}@{self._port('db', 5432)}/gateway"
        self.endpoints = Endpoints(base_url, database_url, str(keys_dir), stub_url, str(repo),
                                   backend_base_url=STUB_IN_NETWORK, replica_urls=replica_urls)
        print(f"compose stack: project {self.project} ({' '.join(self._short_compose())}); "
              + ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items()), file=sys.stderr, flush=True)
        return self.endpoints

    def _compose_env(self, keys_dir: Path, repo: Path) -> dict[str, str]:
        env = {**self.environ, "KEYS_DIR": str(keys_dir.resolve()), "CONFIG_REPO": str(repo.resolve()),
               "POSTGRES_PASSWORD": secrets.token_hex(12), **GATEWAY_TEST_SETTINGS,
               "GATEWAY_WORKERS": str(self.config.gateway_workers)}
        env.setdefault("GATEWAY_IMAGE", GATEWAY_IMAGE)
        env.setdefault("DOCKER_BUILDKIT", "0")  # the classic builder: honours --network none on a 20.10 engine
        env.setdefault("COMPOSE_DOCKER_CLI_BUILD", "0")
        offline = self._local_images(OFFLINE_BASE_IMAGE, OFFLINE_POSTGRES_IMAGE)
        if not env.get("BASE_IMAGE") and OFFLINE_BASE_IMAGE in offline:
            env["BASE_IMAGE"] = OFFLINE_BASE_IMAGE
            env.setdefault("BUILD_NETWORK", "none")
        if not env.get("POSTGRES_IMAGE") and OFFLINE_POSTGRES_IMAGE in offline:
            env["POSTGRES_IMAGE"] = OFFLINE_POSTGRES_IMAGE
        if not env.get("LB_IMAGE") and OFFLINE_BASE_IMAGE in offline:
            included = self._inspect("image", OFFLINE_BASE_IMAGE, '{{index .Config.Labels "acceptance.include"}}')
            if "haproxy" not in included:
                raise SuiteSetupError(f"{OFFLINE_BASE_IMAGE} has no HAProxy for the load balancer (it was made before "
                                      f"the stack had one): run scripts/docker-images base")
            env["LB_IMAGE"] = OFFLINE_BASE_IMAGE
        return env

    def _keys(self) -> Path:
        if self.config.keys_dir:
            return require_keys_dir(self.config.keys_dir)
        keys_dir = generate_keys(self.run_dir / "keys")
        for path in keys_dir.iterdir():  # the gateway in its container may run as another user: let it read
            path.chmod(0o644)
        keys_dir.chmod(0o755)
        return keys_dir

    def image_digest(self) -> str:
        """What the gateway image would be built from now: the sources, the base image, the wheels."""
        base = self.env.get("BASE_IMAGE", "python:3.11-slim")
        base_id = self._inspect("image", base, "{{.Id}}") or base
        wheels_stamp = ROOT / self.env.get("WHEELS_DIR", ".run/wheels") / ".requirements.sha256"
        return source_digest(ROOT, f"{base_id}\n{wheels_stamp.read_text() if wheels_stamp.is_file() else ''}")

    def _build(self) -> None:
        """Build the gateway image unless it carries the digest of the current sources."""
        image = self.env["GATEWAY_IMAGE"]
        base = self.env.get("BASE_IMAGE", "python:3.11-slim")
        digest = self.image_digest()
        old_id = self._inspect("image", image, "{{.Id}}")
        if old_id and self._inspect("image", image, f'{{{{index .Config.Labels "{SOURCE_LABEL}"}}}}') == digest:
            self.timings["build"] = 0.0
            return
        started = time.monotonic()
        self._compose("build", "gateway", env={**self.env, "SOURCE_HASH": digest}, timeout=BUILD_TIMEOUT,
                      what=f"build the gateway image {image} (from {base})",
                      hint="for an offline machine, make the base images first: scripts/docker-images")
        self.timings["build"] = time.monotonic() - started
        new_id = self._inspect("image", image, "{{.Id}}")
        if old_id and new_id and old_id != new_id:  # the replaced image is left untagged: drop it if unused
            self._docker("rmi", old_id, check=False)

    def _wait_stub(self, stub_url: str, timeout: float) -> None:
        """The gateway does not wait for its backends; the suite talks to the stub from the first scenario on."""

        def probe():
            try:
                return str(requests.get(f"{stub_url}/healthz", timeout=2).status_code)
            except requests.RequestException as exc:
                return f"no answer ({type(exc).__name__})"

        try:
            wait_until(f"the model stub at {stub_url} to answer /healthz", probe, lambda seen: seen == "200",
                       timeout=timeout, describe=str)
        except WaitTimeout as exc:
            raise SuiteSetupError(f"{exc}.{self._last_words_safely()}") from None

    def _fail_if_exited(self) -> None:
        for service, state in self.state().items():
            if state.startswith(("exited", "dead")):
                raise SuiteSetupError(f"the {service} container {state} while the stack was starting; its last "
                                      f"lines: {' | '.join(self.logs(8).get(service, []))}")

    def _port(self, service: str, port: int, number: int | None = None) -> str:
        """Where the service's port is published (of its replica `number`, counted from 1, when given)."""
        index = ["--index", str(number)] if number is not None else []
        done = self._compose("port", *index, service, str(port), timeout=CLI_TIMEOUT,
                             what=f"find {service}'s port {port}")
        published = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if not re.fullmatch(r"127\.0\.0\.1:\d+", published):
            raise SuiteSetupError(f"{service}'s port {port} is not published on 127.0.0.1 (compose said "
                                  f"{published!r}); check compose/docker-compose.yml")
        return published

    # -- what the failure evidence and setup errors read ----------------------------------------------------------

    def containers(self) -> dict[str, str]:
        """Container id by name, for this project (any state): the service's name, and gateway-<n> for the
        gateway's replicas."""
        done = self._docker("ps", "-a", "--no-trunc", "--filter", f"label=com.docker.compose.project={self.project}",
                            "--format", '{{.ID}} {{.Label "com.docker.compose.service"}} '
                                        '{{.Label "com.docker.compose.container-number"}}', check=False)
        found = {}
        for line in done.stdout.splitlines():
            cid, service, number = (line.split() + ["", "", ""])[:3]
            if service:
                found[f"{service}-{number}" if service == GATEWAY else service] = cid
        return dict(sorted(found.items()))

    def state(self) -> dict[str, str]:
        """Each container's state by name (the service's, gateway-<n> for a replica)."""
        try:
            containers = self.containers()
            if not containers:
                return {service: "not created" for service in SERVICES}
            done = self._docker("inspect", "--format", '{{.Id}}|{{.State.Status}}|'
                                '{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{.State.ExitCode}}',
                                *containers.values(), check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"docker": f"not answering ({type(exc).__name__})"}
        names = {cid: name for name, cid in containers.items()}
        seen = {}
        for line in done.stdout.splitlines():
            cid, status, health, code = (line.split("|") + ["", "", "", ""])[:4]
            if cid not in names:
                continue
            if status in ("exited", "dead"):
                seen[names[cid]] = f"{status} with code {code}"
            else:
                seen[names[cid]] = f"{status} ({health})" if health else status
        return seen or {"docker": _tail(done.stderr, 2) or "no state"}

    def logs(self, lines: int = 40) -> dict[str, list[str]]:
        """Each service's last log lines (stdout and stderr as the container wrote them, without compose's
        `service  | ` prefix, so JSON log lines stay JSON); the gateway's replicas' lines together, in time order."""
        try:
            containers = self.containers()
        except (OSError, subprocess.TimeoutExpired):
            return {}
        found: dict[str, list[tuple[str, str]]] = {}
        for name, cid in containers.items():
            service = GATEWAY if name.startswith(f"{GATEWAY}-") else name
            try:
                done = subprocess.run([self.docker, "logs", "--timestamps", "--tail", str(lines), cid],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                      timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired) as exc:
                found.setdefault(service, []).append(("", f"(could not read the log of {name}: {type(exc).__name__})"))
                continue
            found.setdefault(service, []).extend(tuple(line.partition(" ")[::2])
                                                 for line in done.stdout.splitlines())
        return {service: [text for _, text in sorted(stamped, key=lambda pair: pair[0])][-lines:]
                for service, stamped in found.items()}

    # -- the gateway's replicas ------------------------------------------------------------------------------------

    def _replicas(self) -> list[str]:
        return [cid for name, cid in self.containers().items() if name.startswith(f"{GATEWAY}-")]

    def kill_replica(self) -> str:
        """SIGKILL the last running gateway replica; its host name (as X-Gateway-Process names it). The scenario
        that kills one starts it again with start_replicas()."""
        running = [cid for cid in self._replicas() if self._inspect("container", cid, "{{.State.Running}}") == "true"]
        if len(running) < 2:
            raise SuiteSetupError(f"killing a replica needs at least 2 running, but {len(running)} run: "
                                  f"{self.state()}")
        self._docker("kill", running[-1])
        return self._inspect("container", running[-1], "{{.Config.Hostname}}")

    def _replica_urls(self) -> tuple[str, ...]:
        return tuple(f"http://{self._port(GATEWAY, 8080, number)}"
                     for number in range(1, self.config.gateway_replicas + 1))

    def start_replicas(self) -> None:
        """Start every stopped replica again and wait until the load balancer sends requests to each (a replica
        started again is published on a new port: the endpoints say where)."""
        for cid in self._replicas():
            if self._inspect("container", cid, "{{.State.Running}}") != "true":
                self._docker("start", cid)
        self.endpoints = dataclasses.replace(self.endpoints, replica_urls=self._replica_urls())
        deadline = time.monotonic() + max(UP_TIMEOUT, self.config.ready_timeout)
        for url in self.endpoints.replica_urls:
            self.wait_ready(url, max(deadline - time.monotonic(), 1.0))
        replicas.wait_balanced(self.endpoints.base_url, self.config.gateway_replicas * self.config.gateway_workers,
                               max(deadline - time.monotonic(), 1.0))

    # -- down ------------------------------------------------------------------------------------------------------

    def down(self) -> None:
        with self._down_lock:
            if self._down_done:
                return
            self._down_done = True
        try:
            if self._started and self.compose:
                self._take_down()
        finally:
            self._restore_signal_handlers()
            if self.run_dir and not self.config.keep_stack:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    def _take_down(self) -> None:
        # A second Ctrl-C must not cut the teardown short: ignore SIGINT meanwhile (children run in their own session).
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            try:
                self._compose("down", "-v", "--remove-orphans", "-t", "5", timeout=DOWN_TIMEOUT,
                              what="take the project down")
            except SuiteSetupError as problem:
                print(f"compose stack: {problem}; removing what is left by label", file=sys.stderr, flush=True)
            self._remove_leftovers()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _remove_leftovers(self) -> None:
        """Whatever `down` left of this project (say it timed out): containers, then volumes and networks."""
        label = f"label=com.docker.compose.project={self.project}"
        for kind, listing in (("container", ["ps", "-aq"]), ("volume", ["volume", "ls", "-q"]),
                              ("network", ["network", "ls", "-q"])):
            try:
                ids = self._docker(*listing, "--filter", label, check=False).stdout.split()
                if ids:
                    removal = ["rm", "-f", "-v"] if kind == "container" else [kind, "rm"]
                    self._docker(*removal, *ids, check=False, timeout=DOWN_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired):
                pass

    # -- signals ---------------------------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        """On SIGTERM/SIGHUP (when nobody else handles them) take the project down, then die of the signal."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                self._old_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.down()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._old_handlers.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, handler)
        self._old_handlers.clear()

    # -- running the CLIs ------------------------------------------------------------------------------------------

    def _short_compose(self) -> list[str]:
        return [Path(self.compose[0]).name, *self.compose[1:]] if self.compose else []

    def _compose(self, *args: str, timeout: float, what: str, env: dict | None = None,
                 hint: str = "") -> subprocess.CompletedProcess:
        argv = [*self.compose, "-f", str(COMPOSE_FILE), "-p", self.project, *args]
        shown = " ".join([*self._short_compose(), *args])
        try:
            # Own session: a Ctrl-C reaches the suite, which then takes the project down, not compose mid-step.
            done = subprocess.run(argv, env=env or self.env or self.environ, capture_output=True, text=True, errors="replace",
                                  timeout=max(timeout, 1.0), stdin=subprocess.DEVNULL, start_new_session=True)
        except subprocess.TimeoutExpired as exc:
            output = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
            raise SuiteSetupError(f"could not {what}: `{shown}` took more than {timeout:.0f} s; last said: "
                                  f"{_tail(output or '', 5)}{self._last_words_safely()}") from None
        if done.returncode != 0:
            raise SuiteSetupError(f"could not {what}: `{shown}` failed (exit {done.returncode}): "
                                  f"{_tail(done.stderr or done.stdout)}" + (f"; {hint}" if hint else "")
                                  + self._last_words_safely())
        return done

    def _last_words_safely(self) -> str:
        if not self._started:
            return ""
        try:
            return self.last_words(8)
        except Exception:  # noqa: BLE001 - evidence must not hide the real problem
            return ""

    def _docker(self, *args: str, check: bool = True, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        done = subprocess.run([self.docker, *args], capture_output=True, text=True, errors="replace",
                              timeout=timeout, stdin=subprocess.DEVNULL, start_new_session=True)
        if check and done.returncode != 0:
            raise SuiteSetupError(f"`docker {' '.join(args)}` failed: {_tail(done.stderr)}")
        return done

    def _inspect(self, kind: str, name: str, template: str) -> str:
        done = self._docker(kind, "inspect", "--format", template, name, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    def _local_images(self, *names: str) -> set[str]:
        return {name for name in names if self._inspect("image", name, "{{.Id}}")}
