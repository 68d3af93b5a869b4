"""Declared state onto the database: apply changed files, find drift, heal it, prune what git no longer declares.

Corrections and prunes are the gateway's own doing (actor system), whoever triggered the pass."""
from __future__ import annotations

import logging
from typing import Any, Callable

from sqlalchemy import delete, select

from gateway import audit
from gateway.config_sync.fields import (MODEL_COLUMNS, MODEL_FIELDS, ORG_COLUMNS, ORG_FIELDS, declared_fingerprint,
                                        effective_rows, fingerprint)
from gateway.config_sync.repository import Declared
from gateway.models import ApiKey, Invitation, Membership, Model, Org
from gateway.security import new_id
from gateway.services import ledger

log = logging.getLogger("gateway.config")


def apply_org(session, org: Org | None, slug: str, spec: dict) -> Org:
    if org is None:
        account = ledger.create_account(session)
        org = Org(id=new_id("org"), slug=slug, account_id=account.id, name=spec["name"])
        session.add(org)
    for _read, write, declared, _same in ORG_FIELDS.values():
        write(org, declared(spec))
    org.sync_policy = spec["sync_policy"]
    org.managed_by = "git"
    return org


def apply_model(session, model: Model | None, name: str, spec: dict) -> Model:
    if model is None:
        model = Model(name=name)
        session.add(model)
    for _read, write, declared, _same in MODEL_FIELDS.values():
        write(model, declared(spec))
    model.managed_by = "git"
    return model


def _prune_org(session, org: Org) -> None:
    """Remove an org and what only makes sense inside it; its billing account and ledger stay (money history)."""
    session.execute(delete(ApiKey).where(ApiKey.org_id == org.id))
    session.execute(delete(Invitation).where(Invitation.org_id == org.id))
    session.execute(delete(Membership).where(Membership.org_id == org.id))
    session.delete(org)


def _drift(kind: str, name: str, field_name: str, declared: Any, effective: Any) -> dict:
    return {"kind": kind, "name": name, "field": field_name, "declared": declared, "effective": effective}


def apply_changes(session, declared: Declared, before: dict[str, str] | None, previous: str | None,
                  actor: audit.Actor) -> None:
    """Write the objects whose files changed since `before` (the applied revision's tree); audit the revision."""
    changed = sorted(p for p, blob in declared.tree.items() if before is None or before.get(p) != blob)
    removed = sorted(p for p in (before or {}) if p not in declared.tree)
    changed_orgs = {name for (kind, name), path in declared.paths.items() if kind == "org" and path in changed}
    changed_models = {name for (kind, name), path in declared.paths.items()
                      if kind == "model" and path in changed}
    if changed_models:
        existing = {m.name: m for m in session.scalars(select(Model).where(Model.name.in_(changed_models)))}
        for name in sorted(changed_models):
            apply_model(session, existing.get(name), name, declared.models[name])
    if changed_orgs:
        existing = {o.slug: o for o in session.scalars(select(Org).where(Org.slug.in_(changed_orgs)))}
        for slug in sorted(changed_orgs):
            apply_org(session, existing.get(slug), slug, declared.orgs[slug])
    session.flush()
    audit.record(session, actor, "config.apply", target=f"revision:{declared.revision}",
                 details={"revision": declared.revision, "previous_revision": previous,
                          "changed": changed[:100], "removed": removed[:100],
                          "orgs": sorted(changed_orgs)[:100], "models": sorted(changed_models)[:100],
                          "settings": declared.settings})
    log.info("applied config revision %s (%d changed, %d removed files)", declared.revision[:12], len(changed),
             len(removed))


def converge(session, declared: Declared) -> list[dict]:
    """Compare declared and effective state; heal or prune where the policy says so; return what is left."""
    heal_all = bool(declared.settings.get("self_heal"))
    prune = bool(declared.settings.get("prune"))
    # Plain rows, not ORM objects: a pass compares every declared object, and rows are several times cheaper.
    return _converge_models(session, declared, heal_all, prune) + _converge_orgs(session, declared, heal_all, prune)


def _undeclared(rows: dict, declared: dict) -> list[str]:
    """Objects managed from git whose file is gone."""
    return [name for name in sorted(set(rows) - set(declared)) if rows[name].managed_by == "git"]


def _converge_models(session, declared: Declared, heal: bool, prune: bool) -> list[dict]:
    models = effective_rows(session, MODEL_COLUMNS, Model.name, declared.models)
    drift: list[dict] = []
    for name in sorted(declared.models):
        spec = declared.models[name]
        drift += _compare(session, "model", name, models.get(name), spec, MODEL_FIELDS, heal,
                          load=lambda n=name: session.get(Model, n),
                          create=lambda n=name, s=spec: apply_model(session, None, n, s), org=None)
    for name in _undeclared(models, declared.models):
        if not prune:
            drift.append(_drift("model", name, "exists", False, True))
            continue
        session.delete(session.get(Model, name))
        audit.record(session, audit.SYSTEM, "config.prune", target=f"model:{name}",
                     details={"kind": "model", "name": name, "revision": declared.revision})
    return drift


def _converge_orgs(session, declared: Declared, heal_all: bool, prune: bool) -> list[dict]:
    orgs = effective_rows(session, ORG_COLUMNS, Org.slug, declared.orgs)
    drift: list[dict] = []
    for slug in sorted(declared.orgs):
        spec = declared.orgs[slug]
        policy = spec.get("sync_policy") or {}
        heal = bool(policy.get("self_heal", heal_all))
        row = orgs.get(slug)
        drift += _compare(session, "org", slug, row, spec, ORG_FIELDS, heal,
                          load=lambda r=row: session.get(Org, r.id),
                          create=lambda n=slug, s=spec: apply_org(session, None, n, s), org=slug)
    for slug in _undeclared(orgs, declared.orgs):
        if not prune:
            drift.append(_drift("org", slug, "exists", False, True))
            continue
        try:
            with session.begin_nested():
                _prune_org(session, session.get(Org, orgs[slug].id))
        except Exception as exc:  # something else still refers to the org: keep it, say why
            log.warning("cannot prune org %s: %s", slug, exc)
            drift.append({**_drift("org", slug, "exists", False, True),
                          "reason": f"prune failed: {type(exc).__name__}"})
            continue
        audit.record(session, audit.SYSTEM, "config.prune", target=f"org:{slug}", org=slug,
                     details={"kind": "org", "name": slug, "revision": declared.revision})
    return drift


def _compare(session, kind: str, name: str, row, spec: dict, fields: dict, heal: bool, *,
             load: Callable, create: Callable, org: str | None) -> list[dict]:
    """Drift of one declared object (`row` holds its effective values, None when it does not exist)."""
    found = []
    if row is None:
        found.append(_drift(kind, name, "exists", True, False))
    elif row.managed_by == "git" and fingerprint(fields, row, reader=0) == declared_fingerprint(fields, spec):
        return found  # the common case, decided in one comparison
    else:
        for field_name, (read, _write, declared, same) in fields.items():
            if not same(read(row), declared(spec)):
                found.append(_drift(kind, name, field_name, declared(spec), read(row)))
        if row.managed_by != "git":
            load().managed_by = "git"
    if not found or not heal:
        return found
    if row is None:
        create()
    else:
        obj = load()
        for item in found:
            fields[item["field"]][1](obj, item["declared"])
    for item in found:
        audit.record(session, audit.SYSTEM, "config.drift_corrected", target=f"{kind}:{name}", org=org,
                     details=dict(item))
        log.info("corrected drift on %s %s: %s %r -> %r", kind, name, item["field"], item["effective"],
                 item["declared"])
    return []
