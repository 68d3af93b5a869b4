"""The compose stack's parts that need no Docker engine: the one-line error when Docker is not reachable, the
compose CLI it picks, the project name, the config repository it renders, the image digest, how it reads
containers' state and logs, and that SIGTERM takes the project down. A fake `docker` (a script that records
its arguments and answers like the real one) stands in for the engine."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from support.harness.config import SuiteSetupError, load
from support.domain.model_backends import Backend, ModelBackends
from support.stacks import config_repo
from support.stacks.compose import (STUB_IN_NETWORK, ComposeStack, compose_command, docker_unreachable,
                                    project_name, source_digest)

ROOT = Path(__file__).resolve().parents[2]

FAKE_DOCKER = textwrap.dedent("""\
    #!/usr/bin/env python3
    import os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
        log.write(" ".join(args) + "\\n")
    if args[:1] == ["info"]:
        if os.environ.get("FAKE_DOCKER_DOWN"):
            sys.stderr.write("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                             "Is the docker daemon running?\\n")
            sys.exit(1)
        print("20.10.24")
    elif args[:2] == ["compose", "version"]:
        sys.exit(0 if not os.environ.get("FAKE_NO_V2") else 1)
    elif args[:2] == ["ps", "-a"]:
        print("c0ffee01 gateway 1")
        print("c0ffee03 gateway 2")
        print("c0ffee02 db 1")
    elif args[:1] == ["inspect"]:
        print("c0ffee01|running|healthy|0")
        print("c0ffee03|running|starting|0")
        print("c0ffee02|exited||1")
    elif args[:1] == ["logs"]:
        second = 2 if args[-1] == "c0ffee01" else 1  # replica 2 wrote its line first
        print(f'2026-01-01T00:00:0{second}.000000000Z {{"level": "info", "message": "GET /readyz 200", '
              f'"request_id": "gw-{args[-1]}"}}')
        sys.stderr.write("2026-01-01T00:00:03.000000000Z a line on stderr\\n")
    """)


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    log = tmp_path / "docker.log"
    log.write_text("")
    monkeypatch.setenv("DOCKER", str(docker))
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.delenv("DOCKER_COMPOSE", raising=False)
    return SimpleNamespace(path=docker, calls=lambda: log.read_text().splitlines())


def compose_config(**userdata):
    return load({"stack": "compose", "run_id": "R0101.test", **userdata}, environ={})


# ---- Docker not reachable -------------------------------------------------------------------------------------------

def test_an_unreachable_engine_stops_the_run_with_one_line_that_says_what_to_do(fake_docker, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_DOWN", "1")
    stack = ComposeStack(compose_config())
    with pytest.raises(SuiteSetupError) as problem:
        stack.up()
    message = str(problem.value)
    assert message.startswith("Docker is not reachable (")
    assert "Cannot connect to the Docker daemon" in message
    assert message.endswith("; start the engine (scripts/docker-engine start) or use -D stack=local")
    assert "\n" not in message
    stack.down()
    stack.down()  # idempotent, and nothing was started: no compose command ran
    assert not any(call.startswith("compose") and "down" in call for call in fake_docker.calls())


def test_a_missing_docker_client_is_named_in_the_error(monkeypatch):
    monkeypatch.setenv("DOCKER", "/nonexistent/docker")
    with pytest.raises(SuiteSetupError, match=r"Docker is not reachable \(no docker client at /nonexistent/docker\)"):
        ComposeStack(compose_config()).up()


def test_behave_with_stack_compose_and_no_engine_exits_with_the_one_line(tmp_path):
    env = {**os.environ, "DOCKER": str(tmp_path / "no-docker")}
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "behave"), "features/health", "-D", "stack=compose",
                           "-f", "plain", "--no-junit", "-o", os.devnull], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("acceptance suite:")]
    assert lines == [f"acceptance suite: Docker is not reachable (no docker client at {tmp_path / 'no-docker'}); "
                     f"start the engine (scripts/docker-engine start) or use -D stack=local"]


def test_docker_unreachable_is_none_when_docker_info_answers(fake_docker):
    assert docker_unreachable(str(fake_docker.path)) is None


# ---- which compose CLI -------------------------------------------------------------------------------------------

def _runner(answering: set[str]):
    def run(argv, **kwargs):
        return SimpleNamespace(returncode=0 if " ".join(argv) in answering else 1, stdout="", stderr="")
    return run


def test_compose_v2_plugin_is_preferred():
    run = _runner({"/usr/bin/docker compose version", "/usr/bin/docker-compose version"})
    assert compose_command("/usr/bin/docker", {}, run, which=lambda _: "/usr/bin/docker-compose") == \
        ["/usr/bin/docker", "compose"]


def test_compose_v1_is_used_when_there_is_no_v2_plugin():
    run = _runner({"/usr/bin/docker-compose version"})
    assert compose_command("/usr/bin/docker", {}, run, which=lambda _: "/usr/bin/docker-compose") == \
        ["/usr/bin/docker-compose"]


def test_no_compose_cli_at_all_is_none_and_an_explicit_one_wins():
    assert compose_command("/usr/bin/docker", {}, _runner(set()), which=lambda _: None) is None
    assert compose_command("/usr/bin/docker", {"DOCKER_COMPOSE": "/opt/docker-compose --verbose"}, _runner(set()),
                           which=lambda _: None) == ["/opt/docker-compose", "--verbose"]


def test_no_compose_cli_stops_the_run_with_a_hint(fake_docker, monkeypatch):
    monkeypatch.setenv("FAKE_NO_V2", "1")
    monkeypatch.setattr("support.stacks.compose.shutil.which", lambda name: None)  # no docker-compose either
    with pytest.raises(SuiteSetupError, match="no Docker Compose CLI found .* or use -D stack=local"):
        ComposeStack(compose_config()).up()


# ---- names, config repository, image digest ----------------------------------------------------------------------

def test_the_project_name_is_the_run_id_made_safe_for_compose():
    assert project_name("R0101.test", "w2") == "acc-r0101testw2"
    assert project_name("r1", "") == "acc-r1"
    assert ComposeStack(compose_config(worker="W1")).project == "acc-r0101testw1"


def test_the_config_repository_routes_its_model_to_the_stub_service_inside_the_network(tmp_path):
    repo = config_repo.create(tmp_path / "repo", STUB_IN_NETWORK)
    model = yaml.safe_load((repo / "models" / "echo-small.yaml").read_text())
    assert model["backends"] == [{"name": "stub-primary", "url": "http://model-primary:9000/v1/chat/completions"}]
    assert config_repo.read_head(repo, "models/echo-small.yaml") is not None  # committed, not just written


def test_model_backends_are_addressed_as_the_gateway_reaches_the_stub():
    backend = Backend("primary", "ns-1")
    compose = ModelBackends("http://127.0.0.1:32769/", STUB_IN_NETWORK)
    assert compose.stub_url == "http://127.0.0.1:32769"  # the suite's control address
    assert backend.chat_url(compose.backend_base_url) == "http://model-primary:9000/ns/ns-1/v1/chat/completions"
    local = ModelBackends("http://127.0.0.1:4000")
    assert local.backend_base_url == "http://127.0.0.1:4000"


def test_the_image_digest_follows_the_gateway_sources_and_nothing_else(tmp_path):
    (tmp_path / "compose").mkdir()
    (tmp_path / "compose" / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "gateway" / "__pycache__").mkdir(parents=True)
    (tmp_path / "gateway" / "app.py").write_text("a = 1\n")
    first = source_digest(tmp_path)
    (tmp_path / "gateway" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "README.md").write_text("not in the image\n")
    assert source_digest(tmp_path) == first
    (tmp_path / "gateway" / "app.py").write_text("a = 2\n")
    assert source_digest(tmp_path) != first
    assert source_digest(tmp_path, "another base image") != source_digest(tmp_path)


# ---- state and logs, as the failure evidence reads them -------------------------------------------------------------

def test_state_names_each_service_and_replica_with_its_health_or_exit_code(fake_docker):
    stack = ComposeStack(compose_config())
    assert stack.state() == {"gateway-1": "running (healthy)", "gateway-2": "running (starting)",
                             "db": "exited with code 1"}
    assert any("label=com.docker.compose.project=acc-r0101test" in call for call in fake_docker.calls())


def test_logs_are_the_containers_own_lines_without_a_compose_prefix_the_replicas_in_time_order(fake_docker):
    logs = ComposeStack(compose_config()).logs(5)
    assert set(logs) == {"gateway", "db"}
    written_by = [line.split('"request_id": ')[1] for line in logs["gateway"] if "request_id" in line]
    assert written_by == ['"gw-c0ffee03"}', '"gw-c0ffee01"}']
    assert logs["gateway"][0].startswith('{"level": "info"')
    assert "a line on stderr" in logs["gateway"]
    assert "logs --timestamps --tail 5 c0ffee01" in fake_docker.calls()


# ---- teardown --------------------------------------------------------------------------------------------------

def test_sigterm_takes_the_project_down_then_ends_the_process(fake_docker, tmp_path):
    child = textwrap.dedent(f"""\
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from support.harness.config import load
        from support.stacks.compose import ComposeStack
        stack = ComposeStack(load({{"stack": "compose", "run_id": "sig1"}}, environ={{}}))
        stack.compose, stack.env = [stack.docker, "compose"], dict(stack.environ)
        stack._started = True
        stack._install_signal_handlers()
        print("ready", flush=True)
        time.sleep(60)
        """)
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, env=os.environ)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == -signal.SIGTERM
    downs = [call for call in fake_docker.calls() if call.startswith("compose") and " down " in f"{call} "]
    assert downs == [f"compose -f {ROOT / 'compose' / 'docker-compose.yml'} -p acc-sig1 down -v --remove-orphans "
                     f"-t 5"]
