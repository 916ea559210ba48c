"""The rules of the house, checked on the source (docs/architecture.md explains them).

* Layers: ``streams/model``, ``decide`` and ``detect`` are pure (they import only each other,
  ``streams/support`` and the package root); ``streams/bus`` adds Kafka and configuration but
  never the runtime, the CLI or a connector; ``connectors`` import only the model, the bus,
  support modules, configuration and other connectors; only ``streams/cli`` may import the CLI.
* No import cycles between our modules, counting imports inside functions and under
  ``TYPE_CHECKING`` (a function-level import is how a cycle hides).
* Vendor names appear in code only under ``connectors/``: adding an identity provider must not
  touch the core. Docstrings and comments may name vendors; string literals and identifiers may
  not (one allow-listed constant: the default alert-route sink *names*).
* A module over 600 lines says at its top why it is one responsibility.

Written by hand (an ``ast`` walk, ~150 lines) rather than with import-linter: the vendor-name and
module-size rules are ours, and one walk serves all four.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("streams", "connectors")

#: layer -> layers it may import (prefix match on dotted module names). The root packages
#: (``streams``: ``__version__``) are allowed everywhere.
PURE = ("streams.model", "streams.decide", "streams.detect", "streams.support")
ALLOWED: dict[str, tuple[str, ...]] = {
    "streams.support": ("streams.support",),
    "streams.config": ("streams.config", "streams.support"),
    "streams.model": PURE,
    "streams.decide": PURE,
    "streams.detect": PURE,
    "streams.bus": (*PURE, "streams.config", "streams.bus"),
    "streams.runtime": (*PURE, "streams.config", "streams.bus", "streams.runtime", "connectors"),
    "streams.cli": ("streams", "connectors"),
    "connectors": (
        "connectors",
        "streams.model",
        "streams.bus",
        "streams.support",
        "streams.config",
    ),
}

VENDORS = frozenset({"okta", "entra", "graph", "google", "hibp", "pwned", "pagerduty", "slack"})
#: (module, assigned name) whose string values may name vendors: default sink names of
#: ``alerts.routes.*`` and ``alerts.intents.*`` (names a user gives sinks in the example
#: configuration, not vendor code).
VENDOR_ALLOWED_ASSIGNMENTS = frozenset({("streams.config.alerting", "DEFAULT_ROUTE_SINKS")})
LONG_MODULE_LINES = 600
LONG_MODULE_MARK = "Why one module:"


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules(root: Path = REPO) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            out[module_name(path, root)] = path
    return out


def imports_of(name: str, tree: ast.AST, known: Iterable[str]) -> set[str]:
    """Our modules that module ``name`` imports anywhere in its body (function level and
    ``TYPE_CHECKING`` included). ``from pkg import sub`` counts as importing ``pkg.sub``."""
    known = set(known)
    is_package = False  # relative imports: resolved against the module's package
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".")
                package = package if is_package else package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            subs = [f"{base}.{alias.name}" for alias in node.names]
            # ``from pkg import sub``: the submodule, not the package, is what is used
            targets = subs if any(s in known for s in subs) else [base]
        else:
            continue
        for target in targets:
            # the longest known module the dotted name starts with
            parts = target.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != name:
                found.add(".".join(parts))
    return found


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    modules = source_modules(root)
    return {
        name: imports_of(name, ast.parse(path.read_text(encoding="utf-8")), modules)
        for name, path in modules.items()
    }


def layer_of(module: str) -> str | None:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def layer_violations(graph: Mapping[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module)
        if layer is None:
            continue
        allowed = ALLOWED[layer]
        for target in sorted(targets):
            if target in PACKAGES:
                continue
            if not any(target == a or target.startswith(a + ".") for a in allowed):
                problems.append(f"{module} ({layer}) imports {target}")
    return problems


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")


def _vendor_words(text: str) -> set[str]:
    lowered = text.lower()
    words = {w.lower() for w in _WORD.findall(text)}
    words |= {"pagerduty"} if "pagerduty" in lowered else set()
    return words & VENDORS


def vendor_names(name: str, tree: ast.AST) -> list[str]:
    """``line: text`` for each string literal or identifier naming a vendor (docstrings and
    comments excluded; comments are not in the tree)."""
    docstrings: set[int] = set()
    allowed: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            docstrings.add(id(body[0].value))
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(
                isinstance(t, ast.Name) and (name, t.id) in VENDOR_ALLOWED_ASSIGNMENTS
                for t in targets
            ):
                allowed.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in docstrings or id(node) in allowed:
            continue
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            text = node.name
        elif isinstance(node, ast.arg):
            text = node.arg
        elif isinstance(node, ast.alias):
            text = f"{node.name} {node.asname or ''}"
        elif isinstance(node, ast.ImportFrom):
            text = node.module or ""
        if text and _vendor_words(text):
            found.append(f"{node.lineno}: {text[:80]!r}")  # type: ignore[attr-defined]
    return found


# --------------------------------------------------------------------------------------------
# The rules, on this repository
# --------------------------------------------------------------------------------------------


def test_layers_import_only_what_they_may() -> None:
    assert layer_violations(import_graph()) == []


def test_the_package_root_brings_in_only_the_vendor_kinds() -> None:
    """``streams/__init__.py`` imports ``connectors.base.kinds`` (the vendor facts the core may
    not spell, declared into ``streams.model.kinds`` before any record is validated); that
    module must stay data: it imports nothing but the table it fills. Anything more would make
    every pure module load connector code."""
    graph = import_graph()
    assert graph["streams"] <= {"connectors.base.kinds"}
    assert graph["connectors.base.kinds"] <= {"streams.model.kinds"}
    assert graph["connectors"] == set()
    assert graph["connectors.base"] == set()


def test_there_is_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_vendor_names_appear_in_code_only_under_connectors() -> None:
    problems = {}
    for name, path in source_modules().items():
        if name.startswith("streams"):
            found = vendor_names(name, ast.parse(path.read_text(encoding="utf-8")))
            if found:
                problems[str(path.relative_to(REPO))] = found
    assert problems == {}


def test_long_modules_say_why_they_are_one_responsibility() -> None:
    long = {}
    for name, path in source_modules().items():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > LONG_MODULE_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if LONG_MODULE_MARK not in doc:
                long[name] = lines
    assert long == {}, f"over {LONG_MODULE_LINES} lines without '{LONG_MODULE_MARK}' at the top"


def test_every_layer_in_the_rules_exists() -> None:
    """A renamed package must not make its rule vacuous."""
    modules = source_modules()
    for layer in ALLOWED:
        assert any(m == layer or m.startswith(layer + ".") for m in modules), layer


# --------------------------------------------------------------------------------------------
# The checks themselves fail when they should
# --------------------------------------------------------------------------------------------


def _tree(tmp_path: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return tmp_path


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "streams/runtime/__init__.py": "",
            "streams/runtime/engine.py": "from streams.decide.leaks import x\n",
            "streams/decide/__init__.py": "",
            "streams/decide/leaks.py": "def f():\n    from streams.runtime.engine import y\n",
        },
    )
    graph = import_graph(root)
    assert cycles(graph) == [["streams.decide.leaks", "streams.runtime.engine"]]
    assert layer_violations(graph) == [
        "streams.decide.leaks (streams.decide) imports streams.runtime.engine"
    ]


def test_a_connector_importing_the_runtime_is_refused(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "streams/runtime/__init__.py": "",
            "streams/runtime/engine.py": "",
            "connectors/x.py": "from streams.runtime import engine\n",
        },
    )
    assert layer_violations(import_graph(root)) == [
        "connectors.x (connectors) imports streams.runtime.engine"
    ]


@pytest.mark.parametrize(
    ("code", "hits"),
    [
        ('IDP = {"okta", "graph"}\n', 2),
        ("class GraphProvider: pass\n", 1),
        ("from connectors.hibp.poller import HibpFeed\n", 2),
        ('"""Okta and Entra are fine in a docstring."""\nCENTRAL = "central paragraph"\n', 0),
        ('def f(pager):\n    return "PagerDuty"\n', 1),
    ],
)
def test_vendor_names_are_found_in_code_but_not_in_docstrings(code: str, hits: int) -> None:
    assert len(vendor_names("streams.x", ast.parse(code))) == hits
