"""The suite's HTTP client: correlation headers on every request, every exchange recorded as masked evidence."""
from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

import requests
from urllib3.response import _get_decoder
from urllib3.util.wait import wait_for_read

from support.client import evidence
from support.harness.redaction import mask_body, mask_headers, mask_text


@dataclass
class Exchange:
    method: str
    url: str
    path: str
    request_headers: dict
    request_body: object
    request_id: str
    status: int | None = None
    response_headers: dict = field(default_factory=dict)
    text: str = ""
    elapsed_ms: float = 0.0
    error: str | None = None

    def json(self):
        try:
            return json.loads(self.text)
        except ValueError:
            raise AssertionError(f"{self.method} {self.path} (request id {self.request_id}) answered {self.status} "
                                 f"with a body that is not JSON: {mask_text(self.text[:300])!r}") from None

    @property
    def served_request_id(self) -> str | None:
        return self.response_headers.get("X-Request-ID")

    def title(self) -> str:
        outcome = self.status if self.status is not None else "no answer"
        return f"{self.method} {mask_text(self.path)} → {outcome} ({self.elapsed_ms:.0f} ms) [{self.request_id}]"

    def evidence(self) -> dict:
        return {"request_id": mask_text(self.request_id), "elapsed_ms": round(self.elapsed_ms, 2),
                "request": {"method": self.method, "url": mask_text(self.url), "headers": mask_headers(self.request_headers),
                            "body": mask_body(self.request_body)},
                "response": {"status": self.status, "headers": mask_headers(self.response_headers),
                             "body": mask_body(self.text)} if self.error is None else None,
                "error": mask_text(self.error)}

    def summary(self) -> str:
        """The exchange in one paragraph, for failure messages."""
        body = mask_body(self.text)
        if len(body) > 600:
            body = body[:600] + " …"
        outcome = self.status if self.status is not None else f"no answer ({self.error})"
        return (f"{self.method} {mask_text(self.path)} → {outcome} [request id {self.request_id}]\n"
                f"response body: {body}")


@dataclass(frozen=True)
class Request:
    """A request described before it is sent (for sending many at once: support.stress.burst)."""
    method: str
    path: str
    token: str | None = None
    json_body: object = None
    headers: dict = field(default_factory=dict)


class _Direct:
    """The scenario's own requests over one keep-alive http.client connection: a third of requests' CPU per exchange,
    and a request's headers and body in one write (urllib3 writes them apart, waking the gateway twice). The answer is
    a requests.Response, so its text and headers read as they did. Anything this path does not do as requests would
    (https or a proxy, a path requests would re-quote, a body that is not JSON or bytes, a header beyond printable
    ASCII, another thread, a redirect) goes through the requests session instead (a redirect: sent again there, which
    follows it)."""

    PLAIN_PATH = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]*")
    PLAIN_HEADER = re.compile(r"[\x20-\x7e]*")
    DEFAULTS = requests.utils.default_headers()

    def __init__(self, base_url: str, proxies: dict):
        parts = urlsplit(base_url)
        self.usable = parts.scheme == "http" and not proxies and bool(parts.hostname)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.host, self.port = parts.hostname, parts.port or 80
        self.connection: http.client.HTTPConnection | None = None
        self.thread = threading.get_ident()  # the scenario's; a connection is not shared between threads

    def body_of(self, url: str, json_body, data, headers: dict) -> tuple[str, bytes | None, dict] | None:
        """The request target, body and headers to send, or None when requests should send it."""
        if (not self.usable or threading.get_ident() != self.thread or not url.startswith(self.origin)
                or not self.PLAIN_PATH.fullmatch(url[len(self.origin):])
                or not all(isinstance(v, str) and self.PLAIN_HEADER.fullmatch(f"{k}{v}") for k, v in headers.items())):
            return None
        sent = requests.structures.CaseInsensitiveDict(self.DEFAULTS)
        sent.update(headers)
        if data is not None:
            if not isinstance(data, bytes):
                return None
            body = data
        elif json_body is not None:
            try:
                body = json.dumps(json_body, allow_nan=False).encode()
            except (TypeError, ValueError):
                return None
            sent.setdefault("Content-Type", "application/json")
        else:
            body = None
        return url[len(self.origin):] or "/", body, dict(sent)

    def content_length(self, method: str, body: bytes | None, headers: dict) -> dict:
        """requests sends Content-Length: 0 with any bodiless request but a GET or HEAD (http.client only with
        POST, PUT and PATCH)."""
        if body is None and method not in ("GET", "HEAD") and "content-length" not in {k.lower() for k in headers}:
            return {**headers, "Content-Length": "0"}
        return headers

    def request(self, method: str, target: str, body: bytes | None, headers: dict, timeout: float
                ) -> requests.Response | None:
        """The answer, or None for a redirect; OSError or http.client.HTTPException when none came."""
        connection = self.connection
        if connection is not None and (connection.sock is None or wait_for_read(connection.sock, timeout=0)):
            connection.close()  # closed by the gateway while idle (or a restart): a new one, as urllib3 does
        if connection is None:
            connection = self.connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            connection.timeout = timeout
            connection.request(method, target, body=body, headers=self.content_length(method, body, headers))
            answer = connection.getresponse()
            content = answer.read()
        except BaseException:
            connection.close()
            self.connection = None
            raise
        if answer.will_close:
            connection.close()
            self.connection = None
        response = requests.Response()
        response.status_code, response.reason, response.url = answer.status, answer.reason, self.origin + target
        response.headers = requests.structures.CaseInsensitiveDict()
        for name, value in answer.getheaders():
            response.headers[name] = f"{response.headers[name]}, {value}" if name in response.headers else value
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity" and content:
            content = _get_decoder(encoding).decompress(content)
        response._content = content
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        return None if response.is_redirect else response

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def session_for(base_url: str) -> requests.Session:
    """A session that reads the environment's proxy and CA bundle settings once, here, instead of on every request
    (requests' trust_env looks them up, and for a .netrc, per request: a fifth of the suite's CPU per exchange)."""
    session = requests.Session()
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(base_url)
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return session


class GatewayUnreachable(AssertionError):
    """The gateway did not answer at all; the message says which request and what the stack last logged."""


class ApiClient:
    def __init__(self, base_url: str, *, request_id_prefix: str, trace_id: str, timeout: float,
                 diagnose: Callable[[], str] | None = None):
        self.base_url = base_url.rstrip("/")
        self.request_id_prefix = request_id_prefix
        self.trace_id = trace_id
        self.timeout = timeout
        self.diagnose = diagnose
        self.session = session_for(self.base_url)
        self.direct = _Direct(self.base_url, self.session.proxies)
        self.exchanges: list[Exchange] = []
        self._sequence = 0

    def next_request_id(self) -> str:
        self._sequence += 1
        return f"{self.request_id_prefix}.{self._sequence:03d}"

    def prepare(self, method: str, path: str, *, token: str | None = None, json_body=None, data=None,
                headers: dict | None = None) -> Exchange:
        """The exchange about to be sent: a request id of the scenario's and the correlation headers, unless the
        caller chose its own (a header given as None is not sent)."""
        request_id = self.next_request_id()
        sent = {"X-Request-ID": request_id, "traceparent": f"00-{self.trace_id}-{secrets.token_hex(8)}-01"}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        sent.update(headers or {})
        sent = {name: value for name, value in sent.items() if value is not None}
        if sent.get("X-Request-ID") != request_id:  # the caller chose the request id (or sent none)
            request_id = sent.get("X-Request-ID") or f"{request_id}(unsent)"
        return Exchange(method, self.base_url + path, path, sent, json_body if data is None else data, request_id)

    def request(self, method: str, path: str, *, token: str | None = None, json_body=None, data=None,
                headers: dict | None = None, timeout: float | None = None) -> Exchange:
        exchange = self.prepare(method, path, token=token, json_body=json_body, data=data, headers=headers)
        try:
            return self.send(exchange, json_body=json_body, data=data, timeout=timeout)
        finally:
            self.record(exchange)

    def send(self, exchange: Exchange, *, json_body=None, data=None, timeout: float | None = None,
             session: requests.Session | None = None) -> Exchange:
        """Send a prepared exchange and fill in its answer, or GatewayUnreachable when none came (not recorded: see
        `record`)."""
        started = time.perf_counter()
        direct = None if session is not None else self.direct.body_of(exchange.url, json_body, data,
                                                                      exchange.request_headers)
        try:
            response = None
            if direct is not None:
                response = self.direct.request(exchange.method, *direct, timeout or self.timeout)
            if response is None:
                response = (session or self.session).request(exchange.method, exchange.url, json=json_body,
                                                             data=data, headers=exchange.request_headers,
                                                             timeout=timeout or self.timeout)
        except (requests.RequestException, OSError, http.client.HTTPException) as exc:
            exchange.elapsed_ms = (time.perf_counter() - started) * 1000
            if not isinstance(exc, requests.RequestException):  # named as requests would name it
                exc = (requests.ReadTimeout if isinstance(exc, TimeoutError) else requests.ConnectionError)(exc)
            exchange.error = f"{type(exc).__name__}: {exc}"
            detail = self.diagnose() if self.diagnose else ""
            raise GatewayUnreachable(
                f"{exchange.method} {mask_text(exchange.path)} (request id {exchange.request_id}) got no answer from "
                f"the gateway at {self.base_url}: {type(exc).__name__}.{detail}") from None
        exchange.elapsed_ms = (time.perf_counter() - started) * 1000
        self.answered(exchange, response)
        exchange.text = response.text
        return exchange

    @staticmethod
    def answered(exchange: Exchange, response: requests.Response) -> None:
        """The answer's status and headers onto the exchange (the request id the gateway made up, if none was sent)."""
        exchange.status = response.status_code
        exchange.response_headers = response.headers  # case-insensitive
        if "X-Request-ID" not in exchange.request_headers and response.headers.get("X-Request-ID"):
            exchange.request_id = response.headers["X-Request-ID"]

    def record(self, exchange: Exchange) -> None:
        """Keep the exchange as the scenario's evidence (call from the scenario's thread: Allure attaches there)."""
        self.exchanges.append(exchange)
        evidence.attach_exchange(exchange)

    def get(self, path: str, **kw) -> Exchange:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> Exchange:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw) -> Exchange:
        return self.request("PUT", path, **kw)

    def patch(self, path: str, **kw) -> Exchange:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw) -> Exchange:
        return self.request("DELETE", path, **kw)

    def close(self) -> None:
        self.direct.close()
        self.session.close()
