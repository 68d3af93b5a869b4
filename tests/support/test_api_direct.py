"""The scenario's client sends over one keep-alive connection what it can, and what it sends and reads back is what
requests would have sent and read: the same headers and body, redirects followed, anything unusual sent by requests."""
import json
from http.server import BaseHTTPRequestHandler

import pytest

from support.client.api import ApiClient


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Recorder.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                              "body": body, "connection": id(self.connection)})
        if self.path == "/moved":
            self.send_response(307)
            self.send_header("Location", "/here")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        answer = json.dumps({"path": self.path, "text": "é"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Twice", "a")
        self.send_header("X-Twice", "b")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_DELETE = do_PUT = _answer

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(serving):
    Recorder.seen = []
    with serving(Recorder) as httpd:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"


def client(base_url):
    return ApiClient(base_url, request_id_prefix="t.direct", trace_id="0" * 32, timeout=5)


def test_plain_requests_share_one_connection_and_read_back_as_before(server):
    api = client(server)
    first = api.post("/orgs/acme/keys", token="tok", json_body={"name": "ci"})
    second = api.delete("/orgs/acme/keys/k1")
    assert first.status == 200 and first.json() == {"path": "/orgs/acme/keys", "text": "é"}
    assert first.response_headers["x-twice"] == "a, b"
    posted, deleted = Recorder.seen
    assert posted["connection"] == deleted["connection"]  # kept alive
    assert json.loads(posted["body"]) == {"name": "ci"}
    assert posted["headers"]["Content-Type"] == "application/json"
    assert posted["headers"]["Authorization"] == "Bearer tok"
    assert posted["headers"]["X-Request-ID"] == first.request_id == "t.direct.001"
    assert posted["headers"]["User-Agent"].startswith("python-requests/")
    assert deleted["headers"]["Content-Length"] == "0" and second.status == 200
    api.close()


def test_a_redirect_is_followed_and_an_odd_header_or_path_goes_through_requests(server):
    api = client(server)
    moved = api.get("/moved")
    assert moved.status == 200 and moved.json()["path"] == "/here"
    odd = api.get("/me", headers={"Authorization": "Bearer ü"})
    spaced = api.get("/a b")
    assert odd.status == 200 and spaced.status == 200
    assert Recorder.seen[-1]["path"] == "/a%20b"  # re-quoted, as requests does
    api.close()


def test_no_answer_is_reported_as_the_gateway_unreachable():
    api = client("http://127.0.0.1:9")
    with pytest.raises(AssertionError, match="got no answer from the gateway .*ConnectionError"):
        api.get("/healthz")
    assert api.exchanges[-1].error.startswith("ConnectionError")
