"""The suite's structure, read from its source: scenario state lives on `context.state` and the run on
`context.suite_run` (nothing else is hung on behave's context), no suite module imports the gateway or the model
stub, support/'s packages import in one direction only, and no module of support/ is named like a standard-library
module or a gateway module."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = ROOT / "support"
SUITE_SOURCES = [ROOT / "environment.py", *sorted((ROOT / "steps").rglob("*.py")), *sorted(SUPPORT.rglob("*.py"))]
CONTEXT_ATTRIBUTES = {"state", "suite_run"}  # the only attributes the suite sets on behave's context

# Bottom to top: a package imports only packages below it (and itself). support/scenario.py sits on top of all.
LAYERS = {"harness": 0, "client": 1, "tokens": 2, "database": 2, "stacks": 3, "domain": 4, "stress": 5,
          "scenario": 6}
# Modules whose name a gateway module shares, kept because tools and scripts import them by that path; neither is
# the suite's side of the gateway module it shares a name with (that is routers/config.py, the declarative config
# API, and routers/signing_keys.py, the rotation API: support/domain/declarations.py and identity.Rotation).
KEPT_NAMES = {"config": "support.harness.config (load, SuiteSetupError)",
              "signing_keys": "support.tokens.signing_keys (KeyMaterial)"}


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_context(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "context"


def _targets(node: ast.AST):
    """Every expression assigned to (or deleted) by a statement, tuples unpacked."""
    if isinstance(node, ast.Assign):
        pending = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr)):
        pending = [node.target]
    elif isinstance(node, ast.Delete):
        pending = list(node.targets)
    elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
        pending = [node.target]
    elif isinstance(node, ast.withitem) and node.optional_vars is not None:
        pending = [node.optional_vars]
    else:
        return
    while pending:
        target = pending.pop()
        if isinstance(target, (ast.Tuple, ast.List)):
            pending.extend(target.elts)
        elif isinstance(target, ast.Starred):
            pending.append(target.value)
        else:
            yield target


def context_writes(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, what) for every attribute set on `context` other than state/suite_run, and every setattr/delattr on
    it."""
    found = []
    for node in ast.walk(tree):
        for target in _targets(node):
            if isinstance(target, ast.Attribute) and _is_context(target.value) and \
                    target.attr not in CONTEXT_ATTRIBUTES:
                found.append((target.lineno, f"context.{target.attr} assigned"))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("setattr", "delattr") and node.args and _is_context(node.args[0]):
            found.append((node.lineno, f"{node.func.id}(context, ...)"))
    return found


def test_the_checker_sees_every_way_of_hanging_something_on_context():
    tree = ast.parse("context.response = 1\n"
                     "context.a, (context.b, x) = 1, (2, 3)\n"
                     "context.count += 1\n"
                     "setattr(context, 'name', 1)\n"
                     "delattr(context, 'name')\n"
                     "for context.item in []: pass\n"
                     "context.state = 1\n"
                     "context.suite_run = 2\n"
                     "context.state.world.last = 3\n")
    assert sorted(line for line, _ in context_writes(tree)) == [1, 2, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("path", SUITE_SOURCES, ids=_relative)
def test_only_the_state_and_the_run_are_set_on_behaves_context(path):
    writes = context_writes(_tree(path))
    assert not writes, (f"{_relative(path)} sets on behave's context: {writes}; keep scenario state on "
                        f"context.state (support/scenario.py) instead")


@pytest.mark.parametrize("path", sorted(SUPPORT.rglob("*.py")), ids=_relative)
def test_support_never_takes_behaves_context(path):
    allure_hooks = {"start_test", "stop_test"}  # the Allure listener's own `context`, not behave's
    taking = [f"{node.name} (line {node.lineno})" for node in ast.walk(_tree(path))
              if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in allure_hooks
              and any(a.arg == "context" for a in node.args.args + node.args.kwonlyargs)]
    assert not taking, f"{_relative(path)}: {taking} take behave's context; take what they need (or the state)"


# ---- black box: the suite reaches the gateway and its backend double over HTTP only ------------------------------

APART = ("gateway", "model_stub")  # the system under test, and the backend double that may run elsewhere


def apart_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) for every import of gateway or model_stub, by statement or by importlib/__import__ with a
    constant name, annotations-only imports included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and \
                isinstance(node.args[0].value, str) and \
                ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module") or
                 (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module"))):
            modules = [node.args[0].value]
        else:
            continue
        found += [(node.lineno, module) for module in modules if module.split(".")[0] in APART]
    return found


def test_the_black_box_checker_sees_every_way_of_importing():
    tree = ast.parse("import gateway.db\nfrom model_stub.tokens import tokens\nimport gatewayish, json\n"
                     "if TYPE_CHECKING:\n    from gateway import app\n"
                     "importlib.import_module('model_stub')\n__import__('gateway.main')\n"
                     "from support.stacks import gateway_process\n")
    assert apart_imports(tree) == [(1, "gateway.db"), (2, "model_stub.tokens"), (5, "gateway"), (6, "model_stub"),
                                   (7, "gateway.main")]


@pytest.mark.parametrize("path", SUITE_SOURCES, ids=_relative)
def test_the_suite_never_imports_the_gateway_or_the_model_stub(path):
    imports = apart_imports(_tree(path))
    assert not imports, (f"{_relative(path)} imports {imports}: the suite talks to the gateway and to its model "
                         f"backend double over HTTP (or the database) only, so it can run against a deployment and a "
                         f"stub started elsewhere; ask the stub's control API (GET /_stub/{{ns}}/calls) instead")


# ---- the dependency direction between support's packages ---------------------------------------------------------

def _package_of(path: Path) -> str | None:
    parts = path.relative_to(SUPPORT).parts
    if len(parts) == 1:
        return "scenario" if parts[0] == "scenario.py" else None  # support/__init__.py: the namespace only
    return parts[0]


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import statements inside `if TYPE_CHECKING:` blocks (annotations only, never run)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            ids |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return ids


def support_imports(path: Path) -> list[tuple[int, str]]:
    """(line, package) for every import of another part of support that runs (TYPE_CHECKING blocks left out)."""
    tree = _tree(path)
    skipped = _type_checking_only(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module] if node.module != "support" else [f"support.{a.name}" for a in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "support" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def test_the_dependency_checker_reads_imports_and_leaves_out_annotations(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nfrom support.client.api import Exchange\n"
                      "import support.tokens.jwks\nfrom support import database\n"
                      "if TYPE_CHECKING:\n    from support.domain.roles import OrgAction\n"
                      "def late():\n    from support.stacks import make_stack\n")
    assert support_imports(module) == [(2, "client"), (3, "tokens"), (4, "database"), (8, "stacks")]


@pytest.mark.parametrize("path", sorted(SUPPORT.rglob("*.py")), ids=_relative)
def test_support_packages_import_only_packages_below_them(path):
    package = _package_of(path)
    if package is None:
        return
    upward = [f"line {line}: support.{imported} ({LAYERS.get(imported, '?')})"
              for line, imported in support_imports(path)
              if imported != package and LAYERS.get(imported, 99) >= LAYERS[package]]
    assert not upward, (f"{_relative(path)} ({package}, layer {LAYERS[package]}) imports from a package that is not "
                        f"below it: {upward}. The direction is harness <- client <- tokens, database <- stacks <- "
                        f"domain <- stress <- scenario (a TYPE_CHECKING import is fine for annotations)")


def test_every_package_of_support_has_a_place_in_the_direction_and_says_what_belongs_there():
    packages = sorted(p.name for p in SUPPORT.iterdir() if (p / "__init__.py").is_file())
    assert set(packages) == set(LAYERS) - {"scenario"}
    for name in packages:
        docstring = ast.get_docstring(_tree(SUPPORT / name / "__init__.py")) or ""
        assert "Imports" in docstring and len(docstring) > 80, (
            f"support/{name}/__init__.py should say what belongs in it and what it may import")


# ---- names ------------------------------------------------------------------------------------------------------

def _names(folder: Path) -> set[str]:
    return {p.stem for p in folder.rglob("*.py") if p.stem != "__init__"} | \
        {p.name for p in folder.rglob("*") if p.is_dir() and (p / "__init__.py").is_file()}


def test_no_module_of_support_is_named_like_a_standard_library_module():
    assert not _names(SUPPORT) & set(sys.stdlib_module_names)


def test_no_module_of_support_is_named_like_a_gateway_module():
    shared = _names(SUPPORT) & _names(ROOT / "gateway")
    assert not shared - set(KEPT_NAMES), (f"support/ modules named like a gateway module: {sorted(shared)}; name "
                                          f"the suite's side for what it is")
