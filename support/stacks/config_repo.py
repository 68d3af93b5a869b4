"""The declarative configuration repository an embedded or compose stack starts from."""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

GATEWAY_SETTINGS = {"self_heal": False, "prune": False, "reconcile_interval_seconds": 1}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=Acceptance Suite",
                           "-c", "user.email=suite@acceptance.test", *args],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def create(path: Path, stub_url: str) -> Path:
    """A fresh repository whose first commit declares the gateway's settings and one model on the stub."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "gateway.yaml").write_text(yaml.safe_dump(GATEWAY_SETTINGS, sort_keys=False))
    (path / "models").mkdir()
    (path / "models" / "echo-small.yaml").write_text(yaml.safe_dump({
        "price": {"prompt_per_1k_micros": 1000, "completion_per_1k_micros": 2000},
        "backends": [{"name": "stub-primary", "url": f"{stub_url}/v1/chat/completions"}],
    }, sort_keys=False))
    (path / "orgs").mkdir()
    (path / "orgs" / ".keep").write_text("")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "Initial gateway configuration")
    return path
