"""Structured JSON logs, one object per line, each carrying the request id of the request being served.

No secret reaches a log line: every line is passed through redact() as it is written, which replaces invitation
tokens (they travel in a path), API keys, JWTs and private keys wherever they appear, whatever logged them."""
from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

from gateway import context


# Ids (inv_ + 32 hex) are shorter than invitation tokens (inv_ + 43 characters) and are kept. Each kind: the literal
# every match begins with, and its pattern.
SECRETS = (
    ("invitation-token", "inv_", re.compile(r"inv_[A-Za-z0-9_-]{40,}")),
    ("api-key", "tg_", re.compile(r"tg_[A-Za-z0-9_-]{20,}")),
    ("jwt", "eyJ", re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")),
    ("private-key", "-----BEGIN ",
     re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S)),
)


def redact(text: str) -> str:
    """The text with every secret-shaped value replaced by `[redacted <kind>]`. A pattern is only run on a text that
    holds its first literal (most lines hold none: a substring test costs a tenth of a regex scan)."""
    for kind, start, pattern in SECRETS:
        if start in text:
            text = pattern.sub(f"[redacted {kind}]", text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "at": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or context.current_request_id(),
            "trace_id": getattr(record, "trace_id", None) or context.current_trace_id(),
        }
        for key, value in getattr(record, "fields", {}).items():
            line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str))


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings become JSON lines too, with the request id of the request that warned
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def log(logger: logging.Logger, level: int, message: str, **fields) -> None:
    logger.log(level, message, extra={"fields": fields})
