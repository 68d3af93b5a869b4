"""Probing one org from another: each probe is paired with the same request about something that does not exist,
so "learns nothing" can be checked as "gets the very same answer"."""
from __future__ import annotations

import json
from dataclasses import dataclass

from support.client.api import Exchange
from support.domain.identity import Identity, made_up_like

IDENTITIES = ("owner", "API key")


@dataclass(frozen=True)
class Probe:
    method: str
    path: str
    probed: str            # the identifier in the path that names the other org's thing
    body: dict | None = None


# thing -> how to ask for it: (path template, what is probed). {slug} is the probed org, {own} the prober's org,
# {rid} the probed org's reservation, {key_id} its API key, {member} its owner's user id.
THINGS = {
    "members": ("GET", "/orgs/{slug}/members", "slug", None),
    "API keys": ("GET", "/orgs/{slug}/keys", "slug", None),
    "usage": ("GET", "/orgs/{slug}/usage", "slug", None),
    "audit log": ("GET", "/orgs/{slug}/audit", "slug", None),
    "reservation": ("GET", "/orgs/{slug}/reservations/{rid}", "slug", None),
    "reservation via Globex": ("GET", "/orgs/{own}/reservations/{rid}", "rid", None),
    "API key to revoke via Globex": ("DELETE", "/orgs/{own}/keys/{key_id}", "key_id", None),
    "member to demote via Globex": ("PATCH", "/orgs/{own}/members/{member}", "member", {"role": "viewer"}),
    "member to remove via Globex": ("DELETE", "/orgs/{own}/members/{member}", "member", None),
}
# What an API key asks for instead, where the model API has an address for it.
KEY_THINGS = {
    "reservation": ("GET", "/v1/reservations/{rid}", "rid", None),
}


class Tenancy:
    def __init__(self, identity: Identity):
        self.identity = identity
        self.world = identity.world

    def credential(self, org_name: str, who: str) -> str:
        if who == "owner":
            return self.identity.platform.access_token(self.identity.platform.owner_of(org_name))
        if who == "API key":
            return self.identity.world.key(self.key_of(org_name)).secret
        raise AssertionError(f"No identity {who!r}; an org's identities are: {', '.join(IDENTITIES)}")

    def key_of(self, org_name: str) -> str:
        keys = [k.name for k in self.world.keys.values() if k.org == org_name]
        if not keys:
            raise AssertionError(f"{org_name!r} has no API key in this scenario")
        return keys[0]

    def _values(self, prober: str, target: str) -> dict:
        org = self.world.org(target)
        return {"slug": org.slug, "own": self.world.org(prober).slug,
                "rid": self.identity.reservation_for(target),
                "key_id": self.world.key(self.key_of(target)).id,
                "member": self.identity.user_id(self.identity.platform.owner_of(target))}

    def probes(self, prober: str, who: str, target: str, thing: str) -> tuple[Probe, Probe]:
        """The probe for `target`'s thing and its twin about a thing that does not exist."""
        table = KEY_THINGS if who == "API key" and thing in KEY_THINGS else THINGS
        if thing not in table:
            raise AssertionError(f"No probe for {thing!r}; known: {', '.join(table)}")
        method, template, probed_name, body = table[thing]
        values = self._values(prober, target)
        fake = dict(values)
        fake[probed_name] = (self.identity.platform.ns.slug("Nowhere") if probed_name == "slug"
                             else made_up_like(values[probed_name]))
        return (Probe(method, template.format(**values), values[probed_name], body),
                Probe(method, template.format(**fake), fake[probed_name], body))

    def send(self, probe: Probe, token: str) -> Exchange:
        return self.identity.api.request(probe.method, probe.path, token=token, json_body=probe.body)

    def read(self, org_name: str, who: str, thing: str) -> Exchange:
        """An org's own identity asking for its own thing (the control)."""
        probe, _ = self.probes(org_name, who, org_name, thing)
        return self.send(probe, self.credential(org_name, who))


def answer_shape(exchange: Exchange, probed: str) -> dict:
    """What a caller learns from an answer: status, media type and body, without the request id and with the
    identifier it asked about replaced by a placeholder."""
    text = exchange.text.replace(probed, "<probed>")
    try:
        body = json.loads(text)
    except ValueError:
        body = text
    if isinstance(body, dict):
        body.pop("request_id", None)
        if isinstance(body.get("error"), dict):
            body["error"] = {k: v for k, v in body["error"].items() if k != "request_id"}
    return {"status": exchange.status, "content_type": exchange.response_headers.get("content-type"),
            "www_authenticate": exchange.response_headers.get("www-authenticate"), "body": body}
