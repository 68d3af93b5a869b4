"""A deliberate fault: one small change to one file of the reference gateway, and the features expected to catch it.

A fault names the exact text it replaces (a line or two; a few faults need a second edit in the same file to stay
consistent, say an order and the cursor that pages through it). Each text must occur exactly once in the file, or
the fault cannot be applied and the catalogue says so (`CatalogueRot`): a gateway change that moves the text makes
the catalogue fail loudly instead of testing nothing."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class CatalogueRot(Exception):
    """A fault's text no longer occurs exactly once in its file: the catalogue must be brought up to date."""


@dataclass(frozen=True)
class Fault:
    name: str  # a short id: what is broken, where
    what: str  # one sentence for the report: what a regression like this does to a customer
    file: str  # path inside the repository
    find: str  # the exact text replaced; must occur exactly once in `file`
    replace: str
    caught_by: tuple[str, ...]  # feature folders or files (features/...) expected to catch it
    sample: bool = False  # one of the few CI runs on every build (scripts/prove --sample)
    also: tuple[tuple[str, str], ...] = ()  # further (find, replace) edits in the same file

    @property
    def edits(self) -> tuple[tuple[str, str], ...]:
        return ((self.find, self.replace), *self.also)

    @property
    def capabilities(self) -> set[str]:
        """The capability folders (features/<capability>) this fault is expected to be caught in."""
        return {Path(path).parts[1] for path in self.caught_by if len(Path(path).parts) > 1}

    def mutated(self, text: str) -> str:
        """`text` (the file's content) with the fault in it; CatalogueRot unless each text to replace occurs
        exactly once."""
        for find, replace in self.edits:
            count = text.count(find)
            if count != 1:
                raise CatalogueRot(f"fault {self.name}: {self.file} holds the text it replaces {count} times "
                                   f"(expected exactly once): {find!r}; update the fault in tools/prove/catalogue.py")
            text = text.replace(find, replace)
        return text

    def check(self, root: Path) -> None:
        """CatalogueRot unless the fault can be applied to the checkout at `root` (and changes something)."""
        path = root / self.file
        if not path.is_file():
            raise CatalogueRot(f"fault {self.name}: {self.file} does not exist; update tools/prove/catalogue.py")
        if any(find == replace for find, replace in self.edits):
            raise CatalogueRot(f"fault {self.name} changes nothing (a find and its replace text are the same)")
        for target in self.caught_by:
            if not (root / target).exists():
                raise CatalogueRot(f"fault {self.name}: {target} (expected to catch it) does not exist")
        self.mutated(path.read_text(encoding="utf-8"))


def check_catalogue(faults: list[Fault], root: Path) -> list[str]:
    """Every problem of the catalogue against the checkout at `root` (duplicate names, rotted faults)."""
    problems, seen = [], set()
    for fault in faults:
        if fault.name in seen:
            problems.append(f"fault {fault.name} is in the catalogue twice")
        seen.add(fault.name)
        try:
            fault.check(root)
        except CatalogueRot as rot:
            problems.append(str(rot))
    return problems
