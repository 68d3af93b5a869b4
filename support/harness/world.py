"""What one scenario knows: its orgs, people and keys by their business names."""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from support.harness.redaction import register_secret


@dataclass
class Person:
    name: str
    email: str
    password: str = field(default_factory=lambda: "pw-" + secrets.token_urlsafe(12))
    user_id: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None

    def __post_init__(self):
        register_secret(self.password, "password")


@dataclass
class OrgRecord:
    name: str
    slug: str
    account_id: str
    owner_invitation: str | None = None


@dataclass
class KeyRecord:
    name: str
    id: str
    secret: str
    prefix: str
    org: str  # the org's business name


@dataclass
class World:
    orgs: dict[str, OrgRecord] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    invitations: dict[str, str] = field(default_factory=dict)  # person -> invitation token
    models: dict[str, str] = field(default_factory=dict)  # business name -> namespaced model name

    def org(self, name: str) -> OrgRecord:
        if name not in self.orgs:
            raise AssertionError(f"The scenario has no org called {name!r}; it knows: {', '.join(self.orgs) or 'none'}")
        return self.orgs[name]

    def person(self, name: str) -> Person:
        if name not in self.people:
            raise AssertionError(f"The scenario has no person called {name!r}; it knows: "
                                 f"{', '.join(self.people) or 'none'}")
        return self.people[name]

    def key(self, name: str) -> KeyRecord:
        if name not in self.keys:
            raise AssertionError(f"The scenario has no API key called {name!r}; it knows: "
                                 f"{', '.join(self.keys) or 'none'}")
        return self.keys[name]
