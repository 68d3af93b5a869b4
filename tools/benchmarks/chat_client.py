"""The gateway benchmark's set-up: an org with an API key and a priced model, made through the API (the load itself
goes over support.client.keep_alive, so that the load generator takes as little of the machine as it can)."""
from __future__ import annotations

import json
import math

import requests

from support.database.reflection import Database
from support.database.seeding import seed_model
from support.tokens.signing_keys import KeyMaterial

PROMPT_PRICE = 1_000_000  # micro-USD per 1k prompt tokens
COMPLETION_PRICE = 2_000_000
CONTENT = "Hello, gateway"  # 4 prompt tokens by the stub's rule
MAX_TOKENS = 5  # the stub's reply "Echo: Hello, gateway" is 5 tokens: usage == the worst case held
COST = math.ceil((4 * PROMPT_PRICE + 5 * COMPLETION_PRICE) / 1000)  # micro-USD per answered request


class Setup:
    """An org with credit, a budget, an owner and an API key, and a model routed to the stub, made through the API."""

    def __init__(self, endpoints, tag: str):
        self.base = endpoints.base_url
        self.keys = KeyMaterial(endpoints.keys_dir)
        self.db = Database(endpoints.database_url)
        self.stub_url = endpoints.stub_url
        self.slug = f"bench-{tag}"
        self.model = f"bench-model-{tag}"
        self.namespace = f"bench-{tag}"
        self.stub_path = f"/ns/{self.namespace}/v1/chat/completions"

    def _ok(self, response, expected, doing):
        if response.status_code != expected:
            raise SystemExit(f"bench: {doing} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def run(self, budget_micros: int, credit_micros: int) -> None:
        admin = {"Authorization": f"Bearer {self.keys.admin_token(ttl=3600)}"}
        email, password = f"owner@{self.slug}.test", "bench-password-1"
        org = self._ok(requests.post(f"{self.base}/admin/orgs", headers=admin, json={
            "slug": self.slug, "name": "Bench", "owner_email": email, "budget_micros": budget_micros}), 201,
            "creating the org")
        self.account_id = org["account_id"]
        self._ok(requests.post(f"{self.base}/invitations/{org['owner_invitation']['token']}/accept",
                               json={"name": "Owner", "password": password}), 200, "accepting the invitation")
        login = self._ok(requests.post(f"{self.base}/auth/login", json={"email": email, "password": password}), 200,
                         "logging in")
        self.owner = {"Authorization": f"Bearer {login['access_token']}"}
        self._ok(requests.post(f"{self.base}/admin/billing/mint", headers=admin, json={
            "account_id": self.account_id, "amount_micros": credit_micros, "reason": "bench"}), 201, "minting")
        self.key = self._ok(requests.post(f"{self.base}/orgs/{self.slug}/keys", headers=self.owner,
                                          json={"name": "bench"}), 201, "issuing a key")["key"]
        seed_model(self.db, self.model, prompt_price_per_1k=PROMPT_PRICE, completion_price_per_1k=COMPLETION_PRICE,
                   backends=[{"name": "stub", "url": f"{self.stub_url}{self.stub_path}"}])

    def set_budget(self, limit_micros: int) -> None:
        self._ok(requests.put(f"{self.base}/orgs/{self.slug}/budget", headers=self.owner,
                              json={"limit_micros": limit_micros}), 200, "setting the budget")

    def usage(self) -> dict:
        return self._ok(requests.get(f"{self.base}/orgs/{self.slug}/usage", headers=self.owner), 200, "usage")

    def body(self) -> bytes:
        return json.dumps({"model": self.model, "messages": [{"role": "user", "content": CONTENT}],
                           "max_tokens": MAX_TOKENS}).encode()
