"""Evidence in the Allure report: every exchange on the step that made it, and a dossier when a step fails."""
from __future__ import annotations

import json

import allure

from support.redaction import mask_data, mask_text


def attach_json(name: str, data) -> None:
    allure.attach(json.dumps(mask_data(data), indent=2, ensure_ascii=False, default=str), name=mask_text(name),
                  attachment_type=allure.attachment_type.JSON)


def attach_text(name: str, text: str) -> None:
    allure.attach(mask_text(text), name=mask_text(name), attachment_type=allure.attachment_type.TEXT)


def attach_exchange(exchange) -> None:
    """One request/response pair, already masked, named so the report's step list reads like a log."""
    allure.attach(json.dumps(exchange.evidence(), indent=2, ensure_ascii=False), name=exchange.title(),
                  attachment_type=allure.attachment_type.JSON)
