"""Which room may import which (docs/architecture.md, "Imports between rooms").

Every import in every module under forge_ray/, jobs/ and serving/, at the top of a module or inside
a function (or under `if TYPE_CHECKING:`), must name a room that the importing room may import. The
order below is the rule; the table in docs/architecture.md is checked against it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The stages in data-flow order: each may import the stages before it, `config` and the foundation
# (errors, storage, offline, cluster, registry and the package itself: every module directly under
# forge_ray/ but pipeline.py, and forge_ray/registry/).
STAGES = ("corpora", "prepare", "synthesize", "mixture", "models", "train", "export", "eval", "rl", "report",
          "serve")
FOUNDATION_PACKAGES = ("registry",)
TOP_MODULES = ("pipeline",)  # modules directly under forge_ray/ that are rooms of their own
OUTSIDE = ("jobs", "serving")  # thin entry points at the repository root


def allowed_imports() -> dict[str, set[str]]:
    """{room: the other rooms it may import}."""
    base = {"foundation", "config"}
    table: dict[str, set[str]] = {"foundation": set(), "config": {"foundation"}}
    for i, stage in enumerate(STAGES):
        table[stage] = base | set(STAGES[:i])
    stages = base | set(STAGES)
    table["pipeline"] = stages  # chains the stages
    table["operate"] = stages  # submits jobs, reads the cluster and the registry
    table["cli"] = stages | {"pipeline", "operate"}
    for room in OUTSIDE:
        table[room] = stages | {"pipeline", "operate", "cli"}
    table["testing"] = stages | {"pipeline", "operate", "cli"}  # fixtures; only tests and benchmarks import it
    return table


ALLOWED = allowed_imports()

# Imports that break the rule today, each with what it waits for. An entry that no longer occurs
# fails the test, so the list only shrinks. Keyed by (file, forbidden room).
PENDING: dict[tuple[str, str], str] = {}


def room_of(module: str, packages: set[str]) -> str | None:
    """The room of an importable module name (`packages`: the folders under forge_ray/), or None
    for one outside forge_ray, jobs/ and serving/."""
    parts = module.split(".")
    if parts[0] != "forge_ray":
        return parts[0] if parts[0] in OUTSIDE else None
    if len(parts) == 1:
        return "foundation"
    top = parts[1]
    if top in TOP_MODULES or (top in packages and top not in FOUNDATION_PACKAGES):
        return top
    return "foundation"  # a module directly under forge_ray/, a foundation package, or an attribute


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool):
    """(line, absolute module name) of every import anywhere in the tree."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base == "forge_ray" or not node.module:
                for alias in node.names:  # `from forge_ray import cluster`: the module named
                    yield node.lineno, f"{base}.{alias.name}"
            else:
                yield node.lineno, base


def violations(root: Path, pending: dict[tuple[str, str], str] = PENDING) -> list[str]:
    """One line per import that its room may not make ('file:line: ...'), and per unknown room."""
    files = sorted((root / "forge_ray").rglob("*.py"))
    for outside in OUTSIDE:
        files += sorted((root / outside).rglob("*.py"))
    packages = {p.name for p in (root / "forge_ray").iterdir() if p.is_dir() and p.name != "__pycache__"}
    found = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        module = module_name(path, root)
        room = room_of(module, packages)
        if room not in ALLOWED:
            found.append(f"{rel}: room {room!r} is not in the table; add it to tests/unit/test_architecture.py "
                         "and docs/architecture.md")
            continue
        for line, name in imported_modules(ast.parse(path.read_text(), rel), module, path.name == "__init__.py"):
            target = room_of(name, packages)
            if target is None or target == room or target in ALLOWED[room] or (rel, target) in pending:
                continue
            may = ", ".join(r for r in ALLOWED if r in ALLOWED[room]) or "nothing"
            found.append(f"{rel}:{line}: {room} imports {name} (room {target}); {room} may import: {may}")
    return found


def test_every_import_goes_up_the_data_flow():
    assert violations(REPO) == []


def test_pending_exceptions_still_occur():
    """A pending exception that was fixed is removed from PENDING (the rule then holds for it too)."""
    left = {(v.split(":")[0], v.split("(room ")[1].split(")")[0]) for v in violations(REPO, pending={})
            if "(room " in v}
    assert sorted(set(PENDING) - left) == []


def test_the_documented_table_is_the_rule():
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Imports between rooms", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"`[a-z]+`", cells[0]):
            documented[cells[0].strip("`")] = set(re.findall(r"`([a-z]+)`", cells[1]))
    assert documented == ALLOWED


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_forbidden_import_is_named_with_its_line(tmp_path):
    for room in ("prepare", "train", "testing", "serve"):
        _write(tmp_path, f"forge_ray/{room}/__init__.py", "")
    _write(tmp_path, "forge_ray/prepare/run.py", "import json\n\n\ndef f():\n    from forge_ray.train import worker\n")
    _write(tmp_path, "forge_ray/serve/app.py", "from forge_ray.testing import fake_engine\n")
    _write(tmp_path, "forge_ray/train/ok.py", "from forge_ray.prepare.dataset import PreparedDataset\n")
    _write(tmp_path, "jobs/serve.py", "from forge_ray import testing\n")
    _write(tmp_path, "forge_ray/agents/__init__.py", "")
    found = violations(tmp_path)
    assert found[0] == "forge_ray/agents/__init__.py: room 'agents' is not in the table; add it to " \
                       "tests/unit/test_architecture.py and docs/architecture.md"
    assert found[1].startswith("forge_ray/prepare/run.py:5: prepare imports forge_ray.train (room train); "
                               "prepare may import: foundation, config, corpora")
    assert found[2].startswith("forge_ray/serve/app.py:1: serve imports forge_ray.testing (room testing)")
    assert found[3].startswith("jobs/serve.py:1: jobs imports forge_ray.testing (room testing)")
    assert len(found) == 4


def test_relative_imports_are_resolved(tmp_path):
    _write(tmp_path, "forge_ray/prepare/__init__.py", "from . import run\n")
    _write(tmp_path, "forge_ray/prepare/run.py", "from ..eval import gate\nfrom .dataset import x\n")
    _write(tmp_path, "forge_ray/eval/__init__.py", "")
    assert [v.split(" (")[0] for v in violations(tmp_path)] == [
        "forge_ray/prepare/run.py:1: prepare imports forge_ray.eval"
    ]
