"""The role matrix as data: what each org action is, how a person attempts it, and what the audit log calls it.

Roles rank owner > admin > member > viewer. `MINIMUM_ROLE` is the contract's permission table as this suite
reads it ("owners manage roles and budgets; admins manage members, keys and budgets; members use keys and read
usage; viewers read only"); `ACTIONS` says how to attempt each one through the platform API. Whatever an attempt
needs in place (a key to revoke, a member to remove, a reservation to read) is prepared by the org's owner first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from support.client.api import Exchange
from support.domain.identity import Identity

ROLES = ("viewer", "member", "admin", "owner")
RANK = {role: i for i, role in enumerate(ROLES)}
TARGET = "Tess"  # the colleague whom role changes and removals are aimed at; joins as a viewer


@dataclass(frozen=True)
class OrgAction:
    phrase: str                 # as the features write it: "issue an API key"
    audit_action: str           # what the audit log calls it
    minimum_role: str           # the lowest role that may do it
    mutation: bool
    attempt: Callable[[Identity, str, str], Exchange]   # (identity, person, org name) -> the attempt
    prepare: Callable[[Identity, str], None] = field(default=lambda identity, org: None)
    allowed_statuses: tuple[int, ...] = (200, 201, 204)

    def allows(self, role: str) -> bool:
        return RANK[role] >= RANK[self.minimum_role]


def _get(path: str):
    def attempt(identity: Identity, person: str, org_name: str) -> Exchange:
        slug = identity.world.org(org_name).slug
        return identity.api.get(path.format(slug=slug), token=identity.platform.access_token(person))
    return attempt


def _with_target(identity: Identity, org_name: str) -> None:
    if TARGET not in identity.world.people or identity.world.person(TARGET).user_id is None:
        identity.platform.add_member(org_name, TARGET, "viewer")


def _with_key(identity: Identity, org_name: str) -> None:
    identity.key_for(org_name, "to-revoke")


def _with_reservation(identity: Identity, org_name: str) -> None:
    identity.reservation_for(org_name)


def _read_reservation(identity: Identity, person: str, org_name: str) -> Exchange:
    slug = identity.world.org(org_name).slug
    return identity.api.get(f"/orgs/{slug}/reservations/{identity.reservation_for(org_name)}",
                            token=identity.platform.access_token(person))


def _issue_key(identity: Identity, person: str, org_name: str) -> Exchange:
    return identity.platform.issue_key(person, org_name, "attempted-key")


def _revoke_key(identity: Identity, person: str, org_name: str) -> Exchange:
    return identity.revoke_key(person, org_name, "to-revoke")


def _invite(role: str):
    def attempt(identity: Identity, person: str, org_name: str) -> Exchange:
        return identity.platform.invite(person, org_name, "Nina", role)
    return attempt


def _set_budget(identity: Identity, person: str, org_name: str) -> Exchange:
    slug = identity.world.org(org_name).slug
    return identity.api.put(f"/orgs/{slug}/budget", token=identity.platform.access_token(person),
                            json_body={"limit_micros": 5_000_000})


def _remove(target: str | None):
    def attempt(identity: Identity, person: str, org_name: str) -> Exchange:
        who = target or identity.platform.owner_of(org_name)
        return identity.remove_member(person, org_name, who)
    return attempt


def _change_role(target: str | None, to: str):
    """target None: the person changes their own role."""
    def attempt(identity: Identity, person: str, org_name: str) -> Exchange:
        return identity.change_role(person, org_name, target or person, to)
    return attempt


# The permission table: one action per row of the contract's Roles section.
MATRIX = [
    OrgAction("view the org", "org.read", "viewer", False, _get("/orgs/{slug}")),
    OrgAction("list the members", "members.list", "viewer", False, _get("/orgs/{slug}/members")),
    OrgAction("read the usage", "usage.read", "viewer", False, _get("/orgs/{slug}/usage")),
    OrgAction("list the API keys", "keys.list", "viewer", False, _get("/orgs/{slug}/keys")),
    OrgAction("read a reservation", "reservations.read", "member", False, _read_reservation, _with_reservation),
    OrgAction("issue an API key", "keys.create", "admin", True, _issue_key),
    OrgAction("revoke an API key", "keys.revoke", "admin", True, _revoke_key, _with_key),
    OrgAction("invite someone", "members.invite", "admin", True, _invite("viewer")),
    OrgAction("remove a member", "members.remove", "admin", True, _remove(TARGET), _with_target),
    OrgAction("change the budget", "budget.update", "admin", True, _set_budget),
    OrgAction("read the audit log", "audit.read", "admin", False, _get("/orgs/{slug}/audit")),
    OrgAction("change a member's role", "members.change_role", "owner", True, _change_role(TARGET, "member"),
              _with_target),
]

# Attempts to gain or hand out more power than one holds: refused for the roles the features list.
ESCALATIONS = [
    OrgAction("invite someone as an owner", "members.invite", "owner", True, _invite("owner")),
    OrgAction("remove the owner", "members.remove", "owner", True, _remove(None)),
    OrgAction("make themself an owner", "members.change_role", "owner", True, _change_role(None, "owner")),
    OrgAction("make themself an admin", "members.change_role", "owner", True, _change_role(None, "admin")),
]

ACTIONS = {a.phrase: a for a in MATRIX + ESCALATIONS}


def action(phrase: str) -> OrgAction:
    if phrase not in ACTIONS:
        raise AssertionError(f"The role matrix has no action {phrase!r}; it knows: {', '.join(ACTIONS)}")
    return ACTIONS[phrase]


# Mass assignment: a valid request with one field it does not take, whose value would grant something.
def _extra_role_change(identity: Identity, person: str, org_name: str, field: str) -> Exchange:
    owner = identity.platform.owner_of(org_name)
    return identity.change_role(person, org_name, "Rita", "member", **{field: identity.user_id(owner)})


def _extra_key(identity: Identity, person: str, org_name: str, field: str) -> Exchange:
    return identity.api.post(f"/orgs/{identity.world.org(org_name).slug}/keys",
                             token=identity.platform.access_token(person),
                             json_body={"name": "smuggled", field: "org_somewhere_else"})


def _extra_invite(identity: Identity, person: str, org_name: str, field: str) -> Exchange:
    return identity.api.post(f"/orgs/{identity.world.org(org_name).slug}/invitations",
                             token=identity.platform.access_token(person),
                             json_body={"email": identity.platform.person("Nina").email, "role": "viewer",
                                        field: "org_somewhere_else"})


def _extra_budget(identity: Identity, person: str, org_name: str, field: str) -> Exchange:
    return identity.api.put(f"/orgs/{identity.world.org(org_name).slug}/budget",
                            token=identity.platform.access_token(person),
                            json_body={"limit_micros": 5_000_000, field: 0})


def _extra_login(identity: Identity, person: str, org_name: str, field: str) -> Exchange:
    who = identity.platform.person(person)
    return identity.api.post("/auth/login", json_body={"email": who.email, "password": who.password, field: "owner"})


def _extra_refresh(identity: Identity, person: str, org_name: str, field: str) -> Exchange:
    identity.platform.access_token(person)  # logs in if needed, so a refresh token is held
    return identity.api.post("/auth/refresh", json_body={"refresh_token": identity.world.person(person).refresh_token,
                                                         field: identity.user_id("Rita")})


MASS_ASSIGNMENT = {
    "changing a member's role": _extra_role_change,
    "issuing an API key": _extra_key,
    "inviting someone": _extra_invite,
    "setting the budget": _extra_budget,
    "logging in": _extra_login,
    "refreshing tokens": _extra_refresh,
}


def smuggle(request: str, identity: Identity, person: str, org_name: str, field: str) -> Exchange:
    if request not in MASS_ASSIGNMENT:
        raise AssertionError(f"No request {request!r} to smuggle a field into; known: {', '.join(MASS_ASSIGNMENT)}")
    return MASS_ASSIGNMENT[request](identity, person, org_name, field)
