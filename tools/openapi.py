"""The gateway's OpenAPI document, checked in as docs/openapi.json so a change to the API shows in review.

    .venv/bin/python -m tools.openapi            # (re)write docs/openapi.json
    .venv/bin/python -m tools.openapi --check    # exit 1, with a one-line summary, when it is out of date

The document is the reference gateway's own (FastAPI's `app.openapi()`), written with sorted keys so that the
same API always gives the same bytes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "openapi.json"
REGENERATE = ".venv/bin/python -m tools.openapi"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def generate() -> dict:
    """The OpenAPI document of the gateway as built now (no database is opened, no secret is read)."""
    from gateway.app import create_app
    from gateway.settings import Settings

    # The routes do not depend on these settings; they only let the app be built without a keys folder.
    settings = Settings(database_url="sqlite://", keys_dir=None, internal_jwt_secret="openapi-only",
                        admin_jwt_secret="openapi-only", config_repo=None)
    return create_app(settings).openapi()


def render(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _operations(document: dict) -> dict[str, dict]:
    return {f"{method.upper()} {path}": operation
            for path, item in (document.get("paths") or {}).items()
            for method, operation in item.items() if method in HTTP_METHODS}


def _changes(label: str, old: dict, new: dict) -> list[str]:
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    return ([f"{label} added: {', '.join(added)}"] if added else []) + \
           ([f"{label} removed: {', '.join(removed)}"] if removed else []) + \
           ([f"{label} changed: {', '.join(changed)}"] if changed else [])


def summarize(old: dict, new: dict) -> str:
    """What differs between the checked-in document (`old`) and the gateway's (`new`), in one line."""
    parts = _changes("operations", _operations(old), _operations(new))
    parts += _changes("schemas", (old.get("components") or {}).get("schemas") or {},
                      (new.get("components") or {}).get("schemas") or {})
    rest = sorted(k for k in set(old) | set(new) if k not in ("paths", "components") and old.get(k) != new.get(k))
    if rest:
        parts.append(f"top-level fields changed: {', '.join(rest)}")
    return "; ".join(parts) or "same content, different formatting"


def out_of_date(path: Path = DOCUMENT) -> str | None:
    """None when `path` holds exactly the gateway's document; otherwise one line saying what differs."""
    current = generate()
    if not path.is_file():
        return f"{path.relative_to(ROOT)} does not exist"
    text = path.read_text(encoding="utf-8")
    if text == render(current):
        return None
    try:
        checked_in = json.loads(text)
    except ValueError as exc:
        return f"{path.relative_to(ROOT)} is not valid JSON ({exc})"
    return summarize(checked_in, current)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.openapi", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when docs/openapi.json differs from the gateway's API")
    args = parser.parse_args(argv)
    if args.check:
        difference = out_of_date()
        if difference is None:
            print(f"{DOCUMENT.relative_to(ROOT)} is up to date")
            return 0
        print(f"{DOCUMENT.relative_to(ROOT)} is out of date ({difference}): run {REGENERATE}")
        return 1
    DOCUMENT.write_text(render(generate()), encoding="utf-8")
    print(f"wrote {DOCUMENT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
