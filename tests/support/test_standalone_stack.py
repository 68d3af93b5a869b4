"""support.stacks.standalone: the -D options a behave process needs to share a running stack as `external`,
and the external stack reading that stack's process logs from -D logs_dir."""
from __future__ import annotations

from types import SimpleNamespace

from support.harness import config as suite_config
from support.stacks import Endpoints
from support.stacks import standalone
from support.stacks.external import ExternalStack

ENDPOINTS = Endpoints("http://127.0.0.1:8000", "postgresql://postgres:pw@127.0.0.1/db1", "/k", "http://127.0.0.1:9",
                      None)


def test_external_defines_name_every_endpoint_the_stack_has_and_where_its_processes_log(tmp_path):
    local_like = SimpleNamespace(name="local", config=suite_config.load({}),
                                 processes={"gateway": SimpleNamespace(log_path=tmp_path / "gateway.log"),
                                            "model-stub": SimpleNamespace(log_path=tmp_path / "model-stub.log")})
    defines = standalone.external_defines(ENDPOINTS, local_like)
    assert defines == {"stack": "external", "base_url": "http://127.0.0.1:8000",
                       "database_url": "postgresql://postgres:pw@127.0.0.1/db1", "keys_dir": "/k",
                       "stub_url": "http://127.0.0.1:9", "logs_dir": str(tmp_path)}
    loaded = suite_config.load({**defines, "keys_dir": str(tmp_path)})  # every option is one the suite knows
    assert (loaded.stack, loaded.logs_dir) == ("external", str(tmp_path))
    assert "config_repo" not in standalone.external_defines(ENDPOINTS)


def test_workers_on_a_compose_stack_build_backend_urls_the_gateway_can_reach(tmp_path, monkeypatch):
    compose_like = Endpoints("http://127.0.0.1:8000", None, "/k", "http://127.0.0.1:9", None, "http://model-stub:8080")
    defines = standalone.external_defines(compose_like)
    assert defines["backend_base_url"] == "http://model-stub:8080"
    worker = ExternalStack(suite_config.load({**defines, "keys_dir": str(tmp_path)}))
    monkeypatch.setattr("support.stacks.external.requests.get", lambda *args, **kwargs: None)  # no gateway here
    monkeypatch.setattr(worker, "wait_ready", lambda *args: None)
    assert worker.up().backend_base_url == "http://model-stub:8080"


def test_describe_gives_the_behave_arguments_and_masks_nothing_it_should_not(tmp_path):
    stack = SimpleNamespace(name="local", config=suite_config.load({}), processes={})
    described = standalone.describe(stack, ENDPOINTS)
    assert described["behave_args"][:2] == ["-D", "stack=external"]
    assert "-D" in described["behave_args"] and "base_url=http://127.0.0.1:8000" in described["behave_args"]
    assert "«masked»" in standalone.masked(ENDPOINTS) and "pw" not in standalone.masked(ENDPOINTS)


def test_an_external_stack_reads_process_logs_only_when_given_their_folder(tmp_path):
    (tmp_path / "gateway.log").write_text("".join(f"line {i}\n" for i in range(100)))
    (tmp_path / "model-stub.log").write_text("stub up\n")
    with_logs = ExternalStack(suite_config.load({"stack": "external", "base_url": "http://x", "logs_dir": str(tmp_path)}))
    assert with_logs.logs(3) == {"gateway": ["line 97", "line 98", "line 99"], "model-stub": ["stub up"]}
    without = ExternalStack(suite_config.load({"stack": "external", "base_url": "http://x"}))
    assert without.logs(3) == {}
