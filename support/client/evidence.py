"""Evidence in the Allure report: every exchange on the step that made it, and a dossier when a step fails.

Everything the suite writes goes through support.harness.redaction: attachments here, failure messages (step
functions are guarded by `install()`, so behave's console output, JUnit XML and Allure's statusDetails get
the masked text), and log records (a masking record factory, so captured logging is masked too). The Allure
formatter masks every file it writes as a last net (support.client.reporting).
"""
from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

import allure

from support.harness.redaction import MaskedText, mask_data, mask_exception, mask_text, mask_url

# What describes this run in the report's environment.properties / executor.json (filled by environment.py,
# written by the Allure formatter when the run ends).
RUN_PROPERTIES: dict[str, str] = {}
PROVE_SUMMARY = Path(__file__).resolve().parents[2] / "reports" / "prove" / "summary.json"  # by scripts/prove


def attach_json(name: str, data) -> None:
    allure.attach(json.dumps(mask_data(data), indent=2, ensure_ascii=False, default=str), name=mask_text(name),
                  attachment_type=allure.attachment_type.JSON)


def attach_text(name: str, text: str) -> None:
    allure.attach(mask_text(text), name=mask_text(name), attachment_type=allure.attachment_type.TEXT)


def attach_exchange(exchange) -> None:
    """One request/response pair, masked field by field (so the report's file logger need not mask it again), named
    so the report's step list reads like a log."""
    allure.attach(MaskedText(json.dumps(exchange.evidence(), indent=2, ensure_ascii=False)), name=exchange.title(),
                  attachment_type=allure.attachment_type.JSON)


# ---- masking what behave prints and records ------------------------------------------------------------------

_GUARDED = "_suite_masks_failures"


def guard_step_functions(registry=None) -> int:
    """Wrap every registered step function so that an exception leaving it has its message masked.

    behave builds the failure text (console, JUnit, Allure statusDetails) from the exception, so this is the one
    place that covers all three. Returns how many step functions were wrapped (already wrapped ones are kept)."""
    if registry is None:  # the registry the runner matches steps with (behave rebinds the module's global)
        from behave.runner import the_step_registry as registry
    wrapped = 0
    for matchers in registry.steps.values():
        for matcher in matchers:
            func = matcher.func
            if getattr(func, _GUARDED, False):
                continue
            _ = matcher.location  # computed from the real function before it is wrapped

            @functools.wraps(func)
            def guarded(*args, _step=func, **kwargs):
                try:
                    return _step(*args, **kwargs)
                except BaseException as exc:  # noqa: B036 - re-raised, masked
                    masked = mask_exception(exc)
                    if masked is exc:
                        raise
                    raise masked from None

            setattr(guarded, _GUARDED, True)
            matcher.func = guarded
            wrapped += 1
    return wrapped


def mask_log_records() -> None:
    """Every log record created in this process gets its message masked (behave captures logging into failure
    output and JUnit XML)."""
    current = logging.getLogRecordFactory()
    if getattr(current, _GUARDED, False):
        return

    def factory(*args, **kwargs):
        record = current(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string stays the logging module's problem
            return record
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return record

    setattr(factory, _GUARDED, True)
    logging.setLogRecordFactory(factory)


def install(step_registry=None) -> None:
    """Mask failure messages and log records from here on (call from before_all, after steps are loaded, with the
    registry the runner matches steps with)."""
    guard_step_functions(step_registry)
    mask_log_records()


def describe_run(**properties) -> None:
    """Facts about this run for the report's environment.properties (None values are left out), with the suite's
    strength as the last scripts/prove run measured it."""
    properties = {**proven_strength(), **properties}
    RUN_PROPERTIES.update({k: mask_url(mask_text(str(v))) for k, v in properties.items() if v is not None and v != ""})


def proven_strength(path: str | None = None) -> dict[str, str]:
    """The kill rate and the survivors of the last scripts/prove run (reports/prove/summary.json, or the file
    SUITE_PROVE_SUMMARY names); nothing when there was none."""
    summary = Path(path or os.environ.get("SUITE_PROVE_SUMMARY") or PROVE_SUMMARY)
    try:
        proven = json.loads(summary.read_text(encoding="utf-8"))
        rate = f"{proven['kill_rate']} of {proven['tried']} faults ({proven['mode']}, {proven['commit']})"
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {"suite.kill_rate": rate, "suite.survivors": ", ".join(proven.get("survivors") or []) or "none"}
