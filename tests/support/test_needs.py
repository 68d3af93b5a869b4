"""A scenario that needs what its stack lacks is skipped with the option to pass, and the run counts such skips
once, by need (support.stacks.needs)."""
from __future__ import annotations

from types import SimpleNamespace

from support.harness.config import load
from support.stacks.base import Endpoints
from support.stacks.needs import missing, skip_summary

BARE = Endpoints("http://gw", None, "/keys", None, None)
FULL = Endpoints("http://gw", "postgresql://db/x", "/keys", "http://stub", "/repo")
EXTERNAL = load({"stack": "external", "base_url": "http://gw"}, environ={})


def test_a_stack_that_lacks_a_need_names_the_option_to_pass():
    assert missing({"needs_database", "smoke"}, BARE, EXTERNAL) == \
        "needs the gateway's database: pass -D database_url=URL (the deployment's database)"
    assert "-D stub_url=URL" in missing({"needs_stub_control"}, BARE, EXTERNAL)
    assert "-D logs_dir=DIR" in missing({"needs_logs"}, FULL, EXTERNAL)
    assert "-D config_repo=PATH" in missing({"needs_config_repo"}, BARE, EXTERNAL)


def test_a_stack_that_offers_everything_skips_nothing():
    offered = {"needs_database", "needs_stub_control", "needs_config_repo", "needs_logs"}
    assert missing(offered, FULL, load({"stack": "external", "base_url": "http://gw", "logs_dir": "/logs"},
                                       environ={})) is None
    assert missing({"needs_logs"}, FULL, load({}, environ={})) is None  # the local stack's logs are its own


def test_the_run_counts_the_skips_once_by_need():
    def scenario(tags=(), reason=None):
        return SimpleNamespace(skip_reason=reason or (missing(set(tags), BARE, EXTERNAL)))
    scenarios = [scenario({"needs_database"}), scenario({"needs_database"}), scenario({"needs_stub_control"}),
                 scenario(reason="skipped by a step for a reason of its own"), SimpleNamespace(skip_reason=None)]
    assert skip_summary(scenarios) == ("3 scenarios skipped: 2 need the gateway's database (-D database_url=URL), "
                                       "1 needs the model backend stub's control API (-D stub_url=URL)")
    assert skip_summary([SimpleNamespace(skip_reason=None)]) is None
