"""Tests of gateway/config_sync/: a real git repository, a SQLite database, no HTTP."""
from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from sqlalchemy import select

from gateway.config_sync import ConfigError, Reconciler, parse_file, repository
from gateway.db import Database
from gateway.models import ApiKey, AuditEvent, Base, Model, Org

BACKEND = {"name": "blue", "url": "http://127.0.0.1:9/v1/chat/completions"}


class Repo:
    def __init__(self, path: Path):
        self.path = path
        path.mkdir()
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              check=True, capture_output=True, text=True).stdout.strip()

    def commit(self, files: dict[str, object | None], message: str = "change") -> str:
        for rel, content in files.items():
            target = self.path / rel
            if content is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")


def org_doc(budget: int | None = 2_000_000, **extra) -> dict:
    return {"name": "Acme", "budget_micros": budget, **extra}


def model_doc(*backends: dict) -> dict:
    return {"price": {"prompt_per_1k_micros": 1000, "completion_per_1k_micros": 2000},
            "backends": list(backends or [BACKEND])}


@pytest.fixture
def world(tmp_path):
    repo = Repo(tmp_path / "config")
    repo.commit({"gateway.yaml": {"self_heal": False, "prune": False, "reconcile_interval_seconds": 1}}, "init")
    db = Database(f"sqlite:///{tmp_path / 'gw.db'}")
    Base.metadata.create_all(db.engine)
    settings = SimpleNamespace(config_repo=str(repo.path), config_branch="main",
                               default_reconcile_interval_seconds=30.0)
    reconciler = Reconciler(SimpleNamespace(settings=settings, db=db))
    yield SimpleNamespace(repo=repo, db=db, reconciler=reconciler)
    db.engine.dispose()


def org(world, slug: str) -> Org | None:
    with world.db.sessions() as session:
        return session.scalar(select(Org).where(Org.slug == slug))


def events(world, action: str) -> list[AuditEvent]:
    with world.db.sessions() as session:
        return session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)).all()


def set_budget(world, slug: str, micros: int) -> None:
    with world.db.transaction() as session:
        session.scalar(select(Org).where(Org.slug == slug)).budget_limit_micros = micros


def test_applies_the_head_and_records_the_revision(world):
    sha = world.repo.commit({"orgs/acme.yaml": org_doc(models=["m1"], rate_limit={"requests": 5, "window_seconds": 2}),
                             "models/m1.yaml": model_doc()})
    status = world.reconciler.sync()
    assert status["status"] == "Synced" and status["revision"] == sha == status["target_revision"]
    assert status["error"] is None and status["drift"] == []
    acme = org(world, "acme")
    assert (acme.budget_limit_micros, acme.allowed_models, acme.rate_limit_requests, acme.managed_by) == \
           (2_000_000, ["m1"], 5, "git")
    with world.db.sessions() as session:
        assert session.get(Model, "m1").backends == [BACKEND]
    applied = events(world, "config.apply")
    assert [e.target for e in applied] == [f"revision:{sha}"]
    assert applied[0].details["orgs"] == ["acme"] and applied[0].details["models"] == ["m1"]
    world.reconciler.sync()
    assert len(events(world, "config.apply")) == 1, "an unchanged head is not applied again"


def test_drift_is_reported_and_left_alone_with_self_heal_off(world):
    world.repo.commit({"orgs/acme.yaml": org_doc()})
    world.reconciler.sync()
    set_budget(world, "acme", 9_000_000)
    status = world.reconciler.sync()
    assert status["status"] == "OutOfSync"
    assert status["drift"] == [{"kind": "org", "name": "acme", "field": "budget_micros", "declared": 2_000_000,
                                "effective": 9_000_000}]
    assert org(world, "acme").budget_limit_micros == 9_000_000
    assert events(world, "config.drift_corrected") == []


def test_a_commit_to_another_org_does_not_overwrite_drift(world):
    world.repo.commit({"orgs/acme.yaml": org_doc(), "orgs/globex.yaml": org_doc()})
    world.reconciler.sync()
    set_budget(world, "acme", 9_000_000)
    world.repo.commit({"orgs/globex.yaml": org_doc(3_000_000)})
    status = world.reconciler.sync()
    assert org(world, "globex").budget_limit_micros == 3_000_000
    assert org(world, "acme").budget_limit_micros == 9_000_000
    assert [d["name"] for d in status["drift"]] == ["acme"]


def test_self_heal_restores_and_audits(world):
    world.repo.commit({"gateway.yaml": {"self_heal": True}, "orgs/acme.yaml": org_doc()})
    world.reconciler.sync()
    set_budget(world, "acme", 9_000_000)
    status = world.reconciler.sync()
    assert status["status"] == "Synced" and status["drift"] == []
    assert org(world, "acme").budget_limit_micros == 2_000_000
    corrected = events(world, "config.drift_corrected")
    assert len(corrected) == 1 and corrected[0].org == "acme"
    assert corrected[0].details == {"kind": "org", "name": "acme", "field": "budget_micros", "declared": 2_000_000,
                                    "effective": 9_000_000}


def test_per_org_self_heal_overrides_the_global_switch(world):
    world.repo.commit({"orgs/acme.yaml": org_doc(sync_policy={"self_heal": True}), "orgs/globex.yaml": org_doc()})
    world.reconciler.sync()
    set_budget(world, "acme", 9_000_000)
    set_budget(world, "globex", 9_000_000)
    status = world.reconciler.sync()
    assert org(world, "acme").budget_limit_micros == 2_000_000
    assert org(world, "globex").budget_limit_micros == 9_000_000
    assert [(d["name"], d["field"]) for d in status["drift"]] == [("globex", "budget_micros")]


def test_model_drift_on_backends(world):
    world.repo.commit({"models/m1.yaml": model_doc()})
    world.reconciler.sync()
    with world.db.transaction() as session:
        session.get(Model, "m1").backends = [{"name": "rogue", "url": "http://127.0.0.1:9/x"}]
    status = world.reconciler.sync()
    assert [(d["kind"], d["name"], d["field"]) for d in status["drift"]] == [("model", "m1", "backends")]
    assert status["drift"][0]["declared"] == [BACKEND]


@pytest.mark.parametrize("broken, line, words", [
    ("name: Globex\nbudget_micros: 1\n  models: [m1]\n", 3, "not valid YAML"),
    ("name: Globex\nbudget_micros: -5\n", 2, "budget_micros must be a whole number of micro-USD"),
    ("name: Globex\nrate_limit:\n  requests: 5\n  window_seconds: soon\n", 4, "window_seconds must be"),
    ("name: Globex\nbudget: 5\n", 2, "unknown key 'budget'"),
    ("name: Globex\nbudget_micros: 1\nbudget_micros: 2\n", 3, "appears twice"),
    ("name: Globex\nmodels: [m1, 7]\n", 2, "models[1] must be a model name"),
])
def test_a_broken_commit_changes_nothing_and_names_file_and_line(world, broken, line, words):
    good = world.repo.commit({"orgs/acme.yaml": org_doc()})
    world.reconciler.sync()
    bad = world.repo.commit({"orgs/acme.yaml": org_doc(5_000_000), "orgs/globex.yaml": broken})
    status = world.reconciler.sync()
    assert status["revision"] == good and status["target_revision"] == bad
    assert status["status"] == "OutOfSync"
    assert status["error"].startswith(f"orgs/globex.yaml, line {line}"), status["error"]
    assert words in status["error"], status["error"]
    assert org(world, "acme").budget_limit_micros == 2_000_000, "all or nothing: the valid part is not applied"
    assert org(world, "globex") is None
    failed = [e for e in events(world, "config.apply") if e.outcome == "failed"]
    assert [e.target for e in failed] == [f"revision:{bad}"]
    world.reconciler.sync()
    assert len([e for e in events(world, "config.apply") if e.outcome == "failed"]) == 1, "audited once per commit"
    fixed = world.repo.commit({"orgs/globex.yaml": None})
    status = world.reconciler.sync()
    assert (status["status"], status["revision"], status["error"]) == ("Synced", fixed, None)
    assert org(world, "acme").budget_limit_micros == 5_000_000


def test_drift_is_still_checked_while_the_head_is_broken(world):
    world.repo.commit({"orgs/acme.yaml": org_doc()})
    world.reconciler.sync()
    world.repo.commit({"gateway.yaml": "self_heal: [\n"})
    set_budget(world, "acme", 9_000_000)
    status = world.reconciler.sync()
    assert status["error"].startswith("gateway.yaml, line 2")
    assert [d["field"] for d in status["drift"]] == ["budget_micros"]


def test_removed_org_stays_and_is_reported_with_prune_off(world):
    world.repo.commit({"orgs/acme.yaml": org_doc()})
    world.reconciler.sync()
    sha = world.repo.commit({"orgs/acme.yaml": None})
    status = world.reconciler.sync()
    assert status["revision"] == sha and status["status"] == "OutOfSync"
    assert status["drift"] == [{"kind": "org", "name": "acme", "field": "exists", "declared": False,
                                "effective": True}]
    assert org(world, "acme").budget_limit_micros == 2_000_000


def test_prune_on_removes_orgs_and_models_removed_from_git(world):
    world.repo.commit({"gateway.yaml": {"prune": True}, "orgs/acme.yaml": org_doc(), "models/m1.yaml": model_doc()})
    world.reconciler.sync()
    with world.db.transaction() as session:
        acme = session.scalar(select(Org).where(Org.slug == "acme"))
        session.add(ApiKey(id="k1", org_id=acme.id, name="ci", prefix="tg_x", key_hash="h" * 64))
    world.repo.commit({"orgs/acme.yaml": None, "models/m1.yaml": None})
    status = world.reconciler.sync()
    assert status["status"] == "Synced" and status["drift"] == []
    assert org(world, "acme") is None
    with world.db.sessions() as session:
        assert session.get(Model, "m1") is None
    assert sorted(e.target for e in events(world, "config.prune")) == ["model:m1", "org:acme"]


def test_api_created_orgs_are_adopted_and_others_left_alone(world):
    with world.db.transaction() as session:
        from gateway.services import ledger
        for slug in ("acme", "other"):
            session.add(Org(id=f"org_{slug}", slug=slug, name=slug, account_id=ledger.create_account(session).id))
    world.repo.commit({"orgs/acme.yaml": org_doc()})
    status = world.reconciler.sync()
    assert status["status"] == "Synced"
    assert org(world, "acme").id == "org_acme" and org(world, "acme").managed_by == "git"
    assert org(world, "other").managed_by is None


def test_unchanged_blobs_are_neither_read_nor_parsed_again(world, monkeypatch):
    world.repo.commit({f"orgs/org-{i:03d}.yaml": org_doc(i) for i in range(50)})
    reads: list[int] = []
    real = repository.read_blobs
    monkeypatch.setattr(repository, "read_blobs", lambda repo, ids: reads.append(len(ids)) or real(repo, ids))
    world.reconciler.sync()
    world.reconciler.sync()
    world.repo.commit({"orgs/org-007.yaml": org_doc(7_000)})
    world.reconciler.sync()
    assert reads == [51, 1], reads


def test_the_interval_comes_from_gateway_yaml(world):
    assert world.reconciler.interval == 1 or world.reconciler.interval == 30.0
    world.reconciler.sync()
    assert world.reconciler.interval == 1
    world.repo.commit({"gateway.yaml": {"reconcile_interval_seconds": 2.5}})
    world.reconciler.sync()
    assert world.reconciler.interval == 2.5


def test_no_repository_is_unknown(world):
    world.reconciler.rt.settings.config_repo = None
    assert world.reconciler.sync()["status"] == "Unknown"


def test_parse_file_names_nested_lines():
    text = "price:\n  prompt_per_1k_micros: 1\n  completion_per_1k_micros: 2\nbackends:\n  - name: a\n    url: ftp://x\n"
    with pytest.raises(ConfigError, match=r"^models/m\.yaml, line 6: backends\[0\]\.url must be an http"):
        parse_file("models/m.yaml", text)
    with pytest.raises(ConfigError, match=r"^orgs/Bad_Slug\.yaml, line 1: the file name must be the org's slug"):
        parse_file("orgs/Bad_Slug.yaml", "name: x\n")
