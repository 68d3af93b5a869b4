"""`python -m gateway` with GATEWAY_STANDBY=1: a warm standby loads what serving needs and forks a gateway for each
line on stdin; the end of stdin ends it quietly, before it reads any setting. With metrics counted in files, neither prometheus-client nor
the gateway's own modules are loaded before the promotion (fresh_metrics_dir() comes first)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOADED = ("import sys; from gateway.__main__ import load_for_serving; load_for_serving(); "
          "print(*(name in sys.modules for name in ('prometheus_client', 'gateway.metrics', 'gateway.app')))")


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith(("GATEWAY_", "DATABASE_", "KEYS_DIR", "PROMETHEUS_"))}
    return subprocess.run(argv, env={**environ, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT, input="",
                          capture_output=True, text=True, timeout=60)


def test_a_standby_whose_stdin_ends_exits_quietly_without_reading_its_settings():
    # No KEYS_DIR and no secrets: a gateway reading its settings would stop with an error.
    done = _run([sys.executable, "-m", "gateway"], GATEWAY_STANDBY="1")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_one_process_loads_the_app_while_it_waits():
    done = _run([sys.executable, "-c", LOADED])
    assert done.stdout.split() == ["True", "True", "True"], done.stderr


def test_several_workers_load_no_metrics_before_the_promotion():
    for env in ({"GATEWAY_WORKERS": "2"}, {"PROMETHEUS_MULTIPROC_DIR": "/nonexistent/metrics"}):
        done = _run([sys.executable, "-c", LOADED], **env)
        assert done.stdout.split() == ["False", "False", "False"], (env, done.stderr)
