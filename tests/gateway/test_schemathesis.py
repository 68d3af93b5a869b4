"""Schemathesis against the running gateway's own OpenAPI (/openapi.json): no generated request may get a 5xx.

The gateway runs as on the embedded stack (model stub, SQLite, keys from scripts/keygen) with one org, its owner,
API keys and credit, so requests get past authentication: each path gets the credential its prefix takes (admin
token, service token, the owner's access token, an API key). Path parameters that name things (an org's slug,
its account, a spare key, a reservation) are filled with real ones on every other case, so bodies are checked
against live objects and not only refused as unknown ids.

Cases per operation and mode (valid, schema-breaking): FUZZ_MAX_EXAMPLES (default 8), derandomized so a run
repeats. SQLite unless FUZZ_DATABASE_URL names a PostgreSQL server. The pytest run ends with one line: cases run,
server errors.
    .venv/bin/python -m pytest tests/gateway/test_schemathesis.py -q
    FUZZ_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres FUZZ_MAX_EXAMPLES=25 .venv/bin/python -m pytest ...
"""
from __future__ import annotations

import os
import secrets
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from support.harness.config import load as load_config
from support.tokens.signing_keys import KeyMaterial
from support.stacks.local import LocalStack

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "8"))
RESULTS: dict = {"cases": 0, "by_status": Counter(), "server_errors": []}


class Summary:
    """Prints the count of cases and server errors at the end of the pytest run."""

    def pytest_terminal_summary(self, terminalreporter):
        errors = RESULTS["server_errors"]
        terminalreporter.write_line(
            f"schemathesis: {RESULTS['cases']} cases run, {len(errors)} server errors; answers by status "
            f"{dict(sorted(RESULTS['by_status'].items()))}")
        for line in errors[:20]:
            terminalreporter.write_line(f"  server error: {line}")


@pytest.fixture(scope="module")
def gateway(request, tmp_path_factory):
    request.config.pluginmanager.register(Summary(), "schemathesis-summary")
    options = {"run_id": "fuzz" + secrets.token_hex(3)}
    if os.environ.get("FUZZ_DATABASE_URL"):  # e.g. a PostgreSQL server: the stack makes a fresh database on it
        options["database_url"] = os.environ["FUZZ_DATABASE_URL"]
    config = load_config(options, environ={})
    stack = LocalStack(config)
    try:
        endpoints = stack.up()
        yield endpoints, _seed(endpoints)
    finally:
        stack.down()


def _seed(endpoints) -> dict:
    """One org with its owner logged in, two API keys (one only ever named in paths), credit and a reservation."""
    base, keys = endpoints.base_url, KeyMaterial(endpoints.keys_dir)
    admin = {"Authorization": f"Bearer {keys.admin_token(ttl=3600)}"}
    service = {"Authorization": f"Bearer {keys.service_token(ttl=3600)}"}
    email, password = f"owner-{secrets.token_hex(3)}@example.test", "pw-" + secrets.token_urlsafe(12)

    def ok(response, status=200):
        assert response.status_code == status, f"seeding: {response.request.method} {response.url} answered " \
                                               f"{response.status_code}: {response.text[:300]}"
        return response.json()

    org = ok(requests.post(f"{base}/admin/orgs", headers=admin, timeout=30,
                           json={"slug": "fuzz-org", "name": "Fuzz", "owner_email": email}), 201)
    owner = ok(requests.post(f"{base}/invitations/{org['owner_invitation']['token']}/accept", timeout=30,
                             json={"name": "Fuzz Owner", "password": password}))
    tokens = ok(requests.post(f"{base}/auth/login", json={"email": email, "password": password}, timeout=30))
    user = {"Authorization": f"Bearer {tokens['access_token']}"}
    key = ok(requests.post(f"{base}/orgs/{org['slug']}/keys", headers=user, json={"name": "fuzz"}, timeout=30), 201)
    spare = ok(requests.post(f"{base}/orgs/{org['slug']}/keys", headers=user, json={"name": "spare"}, timeout=30),
               201)
    ok(requests.post(f"{base}/admin/billing/mint", headers=admin, timeout=30,
                     json={"account_id": org["account_id"], "amount_micros": 50_000_000, "reason": "fuzzing"}), 201)
    reservation = ok(requests.post(f"{base}/billing/reservations", headers=service, timeout=30,
                                   json={"account_id": org["account_id"], "amount_micros": 1000}), 201)
    return {
        "headers": {"/admin/": admin, "/billing/": service, "/v1/": {"Authorization": f"Bearer {key['key']}"},
                    "": user},
        "path": {"slug": org["slug"], "account_id": org["account_id"], "key_id": spare["id"],
                 "user_id": owner["user_id"], "reservation_id": reservation["id"]},
    }


def credentials(seeded: dict, path: str) -> dict:
    for prefix, headers in seeded["headers"].items():
        if path.startswith(prefix):
            return headers
    return {}


def test_no_server_errors(gateway):
    """Every operation, in Schemathesis' positive (schema-valid) and negative (schema-breaking) modes."""
    endpoints, seeded = gateway
    schema = schemathesis.openapi.from_url(f"{endpoints.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the gateway's OpenAPI lists no operation"

    def run(case):
        RESULTS["cases"] += 1
        if case.path_parameters and RESULTS["cases"] % 2:
            for name, value in seeded["path"].items():
                if name in case.path_parameters:
                    case.path_parameters[name] = value
        response = case.call(headers=credentials(seeded, case.path), timeout=30)
        RESULTS["by_status"][response.status_code] += 1
        if response.status_code >= 500:
            RESULTS["server_errors"].append(
                f"{case.method} {case.formatted_path} -> {response.status_code} [request id "
                f"{response.headers.get('X-Request-ID')}]: {response.text[:200]}\n    reproduce: "
                f"{case.as_curl_command()[:600]}")

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                            suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])(
                given(case=operation.as_strategy(generation_mode=mode))(run))
            try:
                fuzz()
            except Unsatisfiable:  # nothing to break: an operation without parameters or body has no negative case
                pass
    errors = RESULTS["server_errors"]
    assert not errors, f"{len(errors)} of {RESULTS['cases']} generated requests got a server error:\n" + \
        "\n".join(errors[:10])
