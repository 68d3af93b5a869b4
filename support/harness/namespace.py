"""Names unique to one scenario of one run, so scenarios never meet each other's data."""
from __future__ import annotations

import hashlib
import re


class Namespace:
    def __init__(self, run_id: str, scenario_key: str):
        self.run_id = run_id
        self.scenario = hashlib.sha1(scenario_key.encode()).hexdigest()[:6]
        self.prefix = f"{run_id}-{self.scenario}".lower()

    def slug(self, name: str) -> str:
        """An org slug: the business name, made unique (e.g. 'Acme' -> 'acme-r1122-3fa2c1')."""
        base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:20] or "org"
        return f"{base}-{self.prefix}"

    def email(self, person: str) -> str:
        base = re.sub(r"[^a-z0-9]+", ".", person.lower()).strip(".") or "person"
        return f"{base}+{self.prefix}@example.test"

    def name(self, thing: str) -> str:
        """A model name, account id or other identifier in this scenario's namespace."""
        base = re.sub(r"[^a-z0-9]+", "-", thing.lower()).strip("-") or "thing"
        return f"{base}-{self.prefix}"

    @property
    def request_id_prefix(self) -> str:
        return f"{self.run_id}.{self.scenario}"
