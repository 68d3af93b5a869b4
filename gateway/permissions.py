"""Roles per org (owner > admin > member > viewer) and what each may do."""
from __future__ import annotations

ROLES = ("viewer", "member", "admin", "owner")
RANK = {role: i for i, role in enumerate(ROLES)}

# action -> the lowest role allowed to do it
MINIMUM_ROLE = {
    "org.read": "viewer",
    "members.list": "viewer",
    "usage.read": "viewer",
    "keys.list": "viewer",
    "reservations.read": "member",
    "keys.create": "admin",
    "keys.revoke": "admin",
    "members.invite": "admin",
    "invitations.list": "admin",
    "invitations.revoke": "admin",
    "members.remove": "admin",
    "budget.update": "admin",
    "audit.read": "admin",
    "members.change_role": "owner",
}


def allows(role: str | None, action: str) -> bool:
    return role is not None and RANK[role] >= RANK[MINIMUM_ROLE[action]]


def outranks_or_equals(role: str, other: str) -> bool:
    return RANK[role] >= RANK[other]
