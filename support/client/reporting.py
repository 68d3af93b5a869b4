"""Allure formatter for behave 1.3 that understands ``Rule:`` blocks.

Registered in behave.ini as::

    -f support.client.reporting:AllureFormatter -o allure-results

Why not the stock ``allure_behave.formatter:AllureFormatter`` (2.16.2)?

* It only wraps ``feature.scenarios``. In behave 1.3 the scenarios of a ``Rule:``
  live in ``rule.scenarios`` (``feature.run_items`` holds the rule), so they are never
  started as Allure tests: they vanish from the results, their steps become orphans,
  and an ``allure.attach`` from a hook or step fails with ``KeyError: None``.
  Here every runnable scenario is wrapped, found with ``feature.walk_scenarios()``
  (top-level ones, those under rules, and each row of every outline).
* An ``allure.attach`` made while no test is running (``before_all``,
  ``before_feature``, ``before_rule``...) raises ``KeyError: None`` in the stock
  listener. Here it becomes a global attachment of the run instead.
* Labels, so the report reads as product capabilities:
  ``epic`` = the capability folder under ``features/`` (``features/billing/x.feature`` ->
  "Billing"), ``feature`` = the Feature's name, ``story`` = the Rule's name (only for
  scenarios under a Rule); ``parentSuite``/``suite``/``subSuite`` follow the same three
  levels and ``titlePath`` (the tree Allure 3 shows by default) is
  capability > feature > rule. A label set by a tag (``@allure.label.epic:Payments``)
  wins over the derived one; tags on a ``Rule:`` count too (the stock listener only
  reads the Feature's and the Scenario's tags).
* Two scenarios with the same name under different rules of one feature get distinct
  ``historyId``/``testCaseId`` (Allure 3 would otherwise fold one into the other as a
  retry).
* Two Allure formatters in one run (behave merges ``format`` from behave.ini with
  ``-f`` on the command line) no longer crash each other with ``KeyError``: each of ours
  starts scenarios on its own listener only, whose reporter keeps its items apart.
  allure_commons still hands every result to every results folder, so use ONE Allure
  formatter per run (register this one in behave.ini, don't add it again with -f).
* Outline names lose the trailing blank that behave's default annotation schema leaves
  when an Examples block has no name.
* Every file written into the results folder is masked with support.harness.redaction (results,
  containers, text attachments): a last net under the masking the suite already does, so
  no secret reaches the report even from an attachment or failure text that missed it.
* When the run ends, ``environment.properties`` and ``executor.json`` describe it: the
  facts the suite published (support.client.evidence.RUN_PROPERTIES: stack, database, base_url,
  run id) plus python/behave/allure versions and the git commit.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import threading
from collections import OrderedDict, defaultdict
from pathlib import Path

import allure_commons
from allure_behave.formatter import AllureFormatter as _StockAllureFormatter
from allure_behave.listener import AllureListener as _StockAllureListener
from allure_behave.utils import TEST_PLAN_SKIP_REASON
from allure_commons.mapping import labels_set, parse_tag
from allure_commons.model2 import Label, Link
from allure_commons.types import LabelType, Severity
from allure_commons.logger import AllureFileLogger
from allure_commons.utils import md5, uuid4
from behave.model import Feature, Rule, ScenarioOutline

from support.client import evidence
from support.harness.redaction import mask_text

__all__ = ["AllureFormatter", "RuleAwareListener", "capability_of", "full_name", "rule_of", "tag_labels"]

FEATURES_DIR = "features"
_WRAPPED_BY = "_allure_reported_by"


# ---------------------------------------------------------------------------
# model helpers
# ---------------------------------------------------------------------------
def rule_of(scenario):
    """The Rule a scenario (or outline row) belongs to, or None."""
    node = getattr(scenario, "parent", None)
    while node is not None and not isinstance(node, Feature):
        if isinstance(node, Rule):
            return node
        node = getattr(node, "parent", None)
    return None


def _humanize(folder: str) -> str:
    text = folder.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:] if text else folder


def capability_of(filename) -> str | None:
    """'features/billing/billing.invoices.feature' -> 'Billing'.

    The capability is the first folder below the last ``features`` folder of the path
    (relative to the working directory when possible). A file directly in features/
    or outside any features/ folder has no capability.
    """
    if not filename or filename == "<string>":
        return None
    path = Path(filename)
    try:
        path = path.resolve().relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        pass
    folders = path.parts[:-1]
    indexes = [i for i, part in enumerate(folders) if part == FEATURES_DIR]
    if not indexes or indexes[-1] + 1 >= len(folders):
        return None
    return _humanize(folders[indexes[-1] + 1])


def _clean_name(scenario) -> str:
    name = scenario.name if scenario.name else scenario.keyword
    return " ".join(name.split()) if name else name


def full_name(scenario) -> str:
    """Like allure_behave.utils.get_fullname, plus the Rule, so same-named scenarios
    in different rules are different test cases."""
    name = _clean_name(scenario).rsplit(" -- ")[0].rstrip()
    rule = rule_of(scenario)
    parts = [scenario.feature.name]
    if rule is not None:
        parts.append(rule.name)
    parts.append(name)
    return ": ".join(parts)


def tag_labels(scenario) -> list:
    """allure_behave.utils.scenario_labels, plus the tags of the scenario's Rule."""
    rule = rule_of(scenario)
    tags = list(scenario.feature.tags) + (list(rule.tags) if rule is not None else [])
    tags += list(scenario.tags)
    default = [Label(name=LabelType.SEVERITY, value=Severity.NORMAL)]
    parsed = [parse_tag(tag) for tag in tags]
    return labels_set([item for item in default + parsed if isinstance(item, Label)])


def _is_planned(scenario, testplan) -> None:
    """allure_behave.utils.is_planned_scenario, with our full_name as selector."""
    if not testplan:
        return
    labels = tag_labels(scenario)
    ids = [label.value for label in labels if label.name == LabelType.ID]
    allure_id = ids[0] if ids else None
    name = full_name(scenario)
    for item in testplan:
        if (allure_id and allure_id == item.get("id")) or name == item.get("selector"):
            return
    scenario.skip(reason=TEST_PLAN_SKIP_REASON)


# ---------------------------------------------------------------------------
# listener
# ---------------------------------------------------------------------------
class RuleAwareListener(_StockAllureListener):
    """Stock listener + capability labels + no KeyError when nothing is running."""

    def __init__(self, behave_config):
        super().__init__(behave_config)
        # allure_commons keeps the running items in a dict shared by every AllureReporter
        # of the process (a class attribute of ThreadContextItems). With two Allure
        # formatters in one run (one from behave.ini plus one from -f, say) each closes
        # the other's tests: KeyError. Move this reporter onto a store of its own; the
        # stock __init__ has put exactly one item there so far (the session's group).
        # pylint: disable=protected-access
        items = self.logger._items
        thread = threading.current_thread()
        shared = items._thread_context[thread]
        own = defaultdict(OrderedDict)
        for group in self.group_context._groups:
            own[thread][group.uuid] = shared.pop(group.uuid)
        items._thread_context = own
        items._init_thread = thread

    # Scenarios are started and stopped by our own wrapper (_run_reported_by); ignore
    # the broadcast hooks a stock allure_behave formatter in the same run may send.
    @allure_commons.hookimpl
    def start_test(self, parent_uuid, uuid, name, parameters, context):
        pass

    @allure_commons.hookimpl
    def stop_test(self, parent_uuid, uuid, name, context, exc_type, exc_val, exc_tb):
        pass

    def start_scenario(self, scenario):
        super().start_scenario(scenario)
        test = self.logger.get_test(self.current_scenario_uuid)
        if test is None:  # pragma: no cover - defensive
            return
        rule = rule_of(scenario)
        feature_name = scenario.feature.name or scenario.feature.keyword
        capability = capability_of(scenario.filename or scenario.feature.filename)

        test.name = _clean_name(scenario)
        test.fullName = full_name(scenario)
        test.testCaseId = md5(test.fullName)
        if rule is not None:
            parts = [scenario.feature.name, rule.name, scenario.name]
            row = getattr(scenario, "_row", None)
            if row:
                parts.extend(f"{n}={v}" for n, v in zip(row.headings, row.cells))
            test.historyId = md5(*parts)

        title_path = [capability] if capability else list(test.titlePath or [])[:-1]
        title_path.append(feature_name)
        if rule is not None:
            title_path.append(rule.name or rule.keyword)
        test.titlePath = title_path

        if rule is not None and not test.description and rule.description:
            test.description = "\n".join(rule.description)

        # Labels from tags, now including the Rule's tags (stock: feature + scenario).
        framework = [label for label in test.labels
                     if label.name in (LabelType.FRAMEWORK, LabelType.LANGUAGE)]
        labels = tag_labels(scenario)
        present = {label.name for label in labels}
        wanted = [
            (LabelType.EPIC, capability),
            (LabelType.FEATURE, feature_name),
            (LabelType.STORY, rule.name if rule is not None else None),
            (LabelType.PARENT_SUITE, capability),
            (LabelType.SUITE, feature_name),
            (LabelType.SUB_SUITE, rule.name if rule is not None else None),
        ]
        for name, value in wanted:
            if value and name not in present:
                labels.append(Label(name=name, value=value))
        test.labels = labels + framework

        if rule is not None:
            urls = {link.url for link in test.links}
            for tag in rule.tags:
                link = parse_tag(tag, issue_pattern=self.issue_pattern,
                                 link_pattern=self.link_pattern)
                if isinstance(link, Link) and link.url not in urls:
                    test.links.append(link)
                    urls.add(link.url)

    # -- attachments made while no test/step/fixture is running (before_all,
    #    before_feature, before_rule, ...) become global attachments of the run.
    def _nothing_running(self) -> bool:
        return self.logger._last_executable() is None  # pylint: disable=protected-access

    @allure_commons.hookimpl
    def attach_data(self, body, name, attachment_type, extension):
        if self._nothing_running():
            self.logger.global_attach_data(uuid4(), body, name=name,
                                           attachment_type=attachment_type, extension=extension)
        else:
            super().attach_data(body, name, attachment_type, extension)

    @allure_commons.hookimpl
    def attach_file(self, source, name, attachment_type, extension):
        if self._nothing_running():
            self.logger.global_attach_file(uuid4(), source, name=name,
                                           attachment_type=attachment_type, extension=extension)
        else:
            super().attach_file(source, name, attachment_type, extension)


# ---------------------------------------------------------------------------
# results files: masked, and the run described
# ---------------------------------------------------------------------------
TEXT_EXTENSIONS = (".json", ".txt", ".csv", ".tsv", ".xml", ".html", ".log", ".yaml", ".yml", ".uri")


class MaskingFileLogger(AllureFileLogger):
    """allure_commons' file logger, with every result, container and text attachment masked."""

    def _report_item(self, item):
        for field in ("statusDetails", "steps", "attachments", "parameters", "description", "name", "fullName"):
            if hasattr(item, field):
                _mask_model(item, field)
        super()._report_item(item)

    @allure_commons.hookimpl
    def report_attached_data(self, body, file_name):
        super().report_attached_data(_mask_body(body), file_name)

    @allure_commons.hookimpl
    def report_attached_file(self, source, file_name):
        if not str(file_name).endswith(TEXT_EXTENSIONS):
            return super().report_attached_file(source, file_name)
        with open(source, "rb") as handle:
            super().report_attached_data(_mask_body(handle.read()), file_name)


def _mask_model(item, field: str) -> None:
    """Mask the strings of an allure model attribute in place (attrs objects, lists of them, plain strings)."""
    value = getattr(item, field)
    if isinstance(value, str):
        setattr(item, field, mask_text(value))
    elif isinstance(value, list):
        for child in value:
            _mask_attrs(child)
    elif value is not None:
        _mask_attrs(value)


def _mask_attrs(obj) -> None:
    for name in getattr(type(obj), "__attrs_attrs__", ()):
        _mask_model(obj, name.name)


def _mask_body(body):
    if isinstance(body, bytes):
        try:
            return mask_text(body.decode("utf-8")).encode("utf-8")
        except UnicodeDecodeError:
            return body  # binary (a screenshot, say): nothing textual to mask
    return mask_text(body) if isinstance(body, str) else body


def _version(dist: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    env = os.environ
    if env.get("GITHUB_SHA") or env.get("CI_COMMIT_SHA"):
        return env.get("GITHUB_SHA") or env.get("CI_COMMIT_SHA")
    try:
        done = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parents[2])
        return done.stdout.strip() or None if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def write_run_metadata(results_dir) -> None:
    """environment.properties and executor.json for this run (replacing a previous run's)."""
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    run = dict(evidence.RUN_PROPERTIES)
    props = {**run, "python": platform.python_version(), "behave": _version("behave"),
             "allure-behave": _version("allure-behave"), "os": f"{platform.system()} {platform.release()}",
             "git.commit": _git_commit()}
    lines = [f"{key}={mask_text(str(value))}" for key, value in props.items() if value]
    (folder / "environment.properties").write_text("\n".join(lines) + "\n", encoding="utf-8")
    executor = {"name": "behave", "type": "ci" if os.environ.get("CI") else "local",
                "buildName": f"run {run['run_id']}" if run.get("run_id") else None,
                "reportName": "AI gateway acceptance"}
    (folder / "executor.json").write_text(json.dumps({k: v for k, v in executor.items() if v}), encoding="utf-8")


# ---------------------------------------------------------------------------
# formatter
# ---------------------------------------------------------------------------
class AllureFormatter(_StockAllureFormatter):
    """allure_behave's formatter with Rule support, capability labels and masked, described results."""

    def __init__(self, stream_opener, config):
        super().__init__(stream_opener, config)
        # Swap the stock file logger for the masking one.
        stock_logger = self.file_logger
        name = allure_commons.plugin_manager.get_name(stock_logger)
        if name and allure_commons.plugin_manager.has_plugin(name):
            allure_commons.plugin_manager.unregister(name=name)
        self.file_logger = MaskingFileLogger(self.stream_opener.name)
        allure_commons.plugin_manager.register(self.file_logger)
        # Swap the stock listener for ours (the stock __init__ registered it already,
        # and put its session group into the shared item store: take that out too).
        stock = self.listener
        name = allure_commons.plugin_manager.get_name(stock)
        if name and allure_commons.plugin_manager.has_plugin(name):
            allure_commons.plugin_manager.unregister(name=name)
        for group in stock.group_context._groups:  # pylint: disable=protected-access
            stock.logger._items.thread_context.pop(group.uuid, None)  # pylint: disable=protected-access
        self.listener = RuleAwareListener(config)
        allure_commons.plugin_manager.register(self.listener)

    def _wrap_scenario(self, scenarios):
        for scenario in scenarios:
            if isinstance(scenario, ScenarioOutline):
                self._wrap_scenario(scenario.scenarios)
                continue
            wrapped_by = scenario.__dict__.setdefault(_WRAPPED_BY, set())
            if id(self) not in wrapped_by:
                scenario.run = _run_reported_by(self.listener, scenario, scenario.run)
                wrapped_by.add(id(self))
            _is_planned(scenario, self.testplan)

    def feature(self, feature):
        # walk_scenarios(): top-level scenarios, scenarios under Rules, outline rows.
        self._wrap_scenario(feature.walk_scenarios())

    def rule(self, rule):
        # Called by behave 1.3 when a Rule starts; everything is wrapped already in
        # feature(), this only catches a Rule whose outlines were rebuilt meanwhile.
        self._wrap_scenario(rule.walk_scenarios())

    def close(self):
        try:
            write_run_metadata(self.stream_opener.name)
        finally:
            super().close()


def _run_reported_by(listener, scenario, run):
    """scenario.run, reporting to this formatter's listener only.

    The stock formatter wraps with allure_commons.test, which broadcasts start_test /
    stop_test to every registered listener: with two Allure formatters in one run each
    would record every scenario twice.
    """
    @functools.wraps(run)
    def run_and_report(*args, **kwargs):
        listener.start_scenario(scenario)
        try:
            return run(*args, **kwargs)
        finally:
            listener.stop_scenario(scenario)
    return run_and_report
