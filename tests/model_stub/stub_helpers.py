"""Starting the model stub as a real subprocess (python -m model_stub) and talking to it, for its tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NotReady(Exception):
    pass


class Stub:
    def __init__(self, proc: subprocess.Popen, url: str, stderr_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.stderr_path = stderr_path

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def start_stub(tmp: Path) -> Stub:
    port = _free_port()
    stdout = open(tmp / "stub.out", "wb")
    stderr_path = tmp / "stub.err"
    stderr = open(stderr_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "model_stub", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        stdout=stdout,
        stderr=stderr,
    )
    stdout.close()
    stderr.close()
    url = f"http://127.0.0.1:{port}"

    @retry(
        retry=retry_if_exception_type((httpx.TransportError, NotReady)),
        stop=stop_after_delay(20),
        wait=wait_fixed(0.05),
        reraise=True,
    )
    def wait_ready() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"model stub exited with {proc.returncode}: {stderr_path.read_text()}")
        response = httpx.get(f"{url}/healthz", timeout=1)
        if response.status_code != 200:
            raise NotReady(response.status_code)

    try:
        wait_ready()
    except BaseException:
        stop(proc)
        raise
    return Stub(proc, url, stderr_path)


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def chat_body(content: str = "hello world", **extra) -> dict:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": content}], **extra}


def chat(client: httpx.Client, ns: str, body: dict, **kwargs) -> httpx.Response:
    return client.post(f"/ns/{ns}/v1/chat/completions", json=body, **kwargs)


def set_behaviour(client: httpx.Client, ns: str, **behaviour) -> dict:
    response = client.put(f"/_stub/{ns}/behaviour", json=behaviour)
    assert response.status_code == 200, response.text
    return response.json()


def calls(client: httpx.Client, ns: str) -> list[dict]:
    response = client.get(f"/_stub/{ns}/calls")
    assert response.status_code == 200
    return response.json()["calls"]
