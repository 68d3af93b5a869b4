"""Where the acceptance project is: the folder whose behave.ini, features/ and reports/ the tools work on."""
from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def project_root() -> Path:
    """The current folder when it is an acceptance project (it has a behave.ini), else the checkout holding these
    tools. The scripts/ shims start in the checkout; a test may run a tool on a throwaway project of its own."""
    here = Path.cwd()
    return here if (here / "behave.ini").is_file() else CHECKOUT
