"""The embedded stack as a user meets it: it comes up, and when the gateway dies the next request says why."""
import pytest

from support.client.api import ApiClient, GatewayUnreachable
from support.harness.config import SuiteSetupError, load
from support.stacks import make_stack


def test_the_embedded_stack_is_ready_and_describes_itself(stack):
    client = ApiClient(stack.endpoints.base_url, request_id_prefix="t.stack", trace_id="0" * 31 + "1", timeout=5)
    response = client.get("/readyz")
    assert response.status == 200
    assert response.served_request_id == "t.stack.001"
    assert set(stack.state()) == {"gateway", "model-stub"}
    assert all(state.startswith("running") for state in stack.state().values())


def test_a_stopped_gateway_fails_the_next_request_with_its_request_id_and_last_log_lines(stack):
    client = ApiClient(stack.endpoints.base_url, request_id_prefix="t.dead", trace_id="0" * 31 + "1", timeout=5,
                       diagnose=stack.last_words)
    stack.processes["gateway"].kill()
    with pytest.raises(GatewayUnreachable) as failure:
        client.get("/healthz")
    message = str(failure.value)
    assert "request id t.dead.001" in message
    assert "gateway exited with code" in message
    assert "The gateway's last log lines" in message and "Uvicorn running" in message


def test_a_missing_key_file_stops_the_run_with_a_hint(tmp_path):
    (tmp_path / "signing-key.pem").write_text("x")
    with pytest.raises(SuiteSetupError, match="scripts/keygen --out"):
        make_stack(load({"keys_dir": str(tmp_path)}, environ={})).up()


def test_an_unreachable_external_deployment_stops_the_run_with_a_hint():
    with pytest.raises(SuiteSetupError, match="the gateway at http://127.0.0.1:9 is down"):
        make_stack(load({"stack": "external", "base_url": "http://127.0.0.1:9"}, environ={})).up()
