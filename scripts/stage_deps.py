"""Which maskpipe modules each DVC stage runs, and whether dvc.yaml lists them all as deps.

    python scripts/stage_deps.py           # print each stage's import closure within maskpipe
    python scripts/stage_deps.py --check   # exit 1 naming every module missing from a stage's deps
    python scripts/stage_deps.py --fix     # rewrite the code lines of every stage's deps to its closure

A stage's code is `stages/<name>.py` plus every `maskpipe` module it imports, directly or through
other modules, including imports inside functions (lazy imports still run). A module counts as
listed when its file, or a folder above it, is a dep of the stage. Files a module runs by path
(``Path(__file__).with_name("x.py")``) count as imports. A change to an unlisted module would not
rerun the stage: for a reproducible pipeline that is a correctness bug (tests run this).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "maskpipe"


def module_file(name: str, src: Path = SRC) -> Path | None:
    """src/maskpipe/a/b.py or src/maskpipe/a/b/__init__.py for 'maskpipe.a.b' (None if neither)."""
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, src: Path) -> str:
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, src: Path = SRC, by_path: bool = True) -> set[str]:
    """maskpipe modules named by the imports of one file (absolute and relative, anywhere in it);
    ``by_path``: also the sibling files it runs by path (not imports: no part of an import cycle)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    here = _module_name(path, src) if path.is_relative_to(src) else ""
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".") if is_pkg else here.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            # `from maskpipe.x import y` may import the submodule maskpipe.x.y
            found.update(f"{mod}.{a.name}" for a in node.names)
        elif by_path and here and (sibling := _sibling_code_file(node)):
            # Path(__file__).with_name("x.py"): a module run by path (pyfunc's models-from-code file)
            package = here.split(".") if is_pkg else here.split(".")[:-1]
            found.add(".".join(package + [sibling[:-3]]))
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def _sibling_code_file(node: ast.AST) -> str | None:
    """ "x.py" for a ``<path>.with_name("x.py")`` call, else None."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "with_name"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and node.args[0].value.endswith(".py")
    ):
        return node.args[0].value
    return None


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only: never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)


def import_cycles(src: Path = SRC) -> list[list[str]]:
    """Groups of maskpipe modules that import each other in a circle (lazy imports count)."""
    graph: dict[str, set[str]] = {}
    for f in sorted(src.rglob("*.py")):
        name = _module_name(f, src)
        graph[name] = {
            m
            for m in imported_modules(f, src, by_path=False)
            if m != name and module_file(m, src) is not None
        }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def closure(script: Path, src: Path = SRC) -> set[Path]:
    """Files of every maskpipe module ``script`` runs (parent packages' __init__ included)."""
    todo, files = [script], set()
    seen_scripts: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen_scripts:
            continue
        seen_scripts.add(path)
        for name in imported_modules(path, src):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
                f = module_file(".".join(parts[:i]), src)
                if f is not None and f not in files:
                    files.add(f)
                    todo.append(f)
    return files


def stage_scripts(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, tuple[Path, list[str]]]:
    """{stage: (its stages/<x>.py script, its deps)} from dvc.yaml (foreach stages once)."""
    spec = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))
    out = {}
    for name, stage in (spec.get("stages") or {}).items():
        body = stage.get("do", stage)
        cmd = body["cmd"] if isinstance(body["cmd"], str) else " ".join(body["cmd"])
        scripts = [w for w in cmd.split() if w.startswith("stages/") and w.endswith(".py")]
        if scripts:
            deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps") or []]
            out[name] = (dvc_yaml.parent / scripts[0], deps)
    return out


def missing_deps(dvc_yaml: Path = ROOT / "dvc.yaml", root: Path = ROOT) -> dict[str, list[str]]:
    """{stage: [module files not covered by its deps]}; empty when every stage is complete."""
    problems: dict[str, list[str]] = {}
    for stage, (script, deps) in stage_scripts(dvc_yaml).items():
        dep_paths = [(root / d).resolve() for d in deps]
        needed = [script, *closure(script, root / "src")]
        missing = sorted(
            str(f.relative_to(root))
            for f in needed
            if not any(f.resolve() == d or d in f.resolve().parents for d in dep_paths)
        )
        if missing:
            problems[stage] = missing
    return problems


def code_deps(script: Path, root: Path = ROOT) -> list[str]:
    """The code deps of a stage: its script, then its closure with a package folder listed
    whole when the stage runs every module in it (src/maskpipe/synth rather than 7 files)."""
    files = {f.resolve() for f in closure(script, root / "src")}
    out: set[str] = set()
    for f in sorted(files):
        folder = f.parent
        pkg_files = {p.resolve() for p in folder.glob("*.py")}
        if folder != (root / "src" / PACKAGE).resolve() and pkg_files <= files:
            out.add(str(folder.relative_to(root.resolve())))
        else:
            out.add(str(f.relative_to(root.resolve())))
    return [str(script.relative_to(root))] + sorted(out)


def fix(dvc_yaml: Path = ROOT / "dvc.yaml", root: Path = ROOT) -> list[str]:
    """Rewrite the code lines (stages/*.py, src/maskpipe/...) of each stage's deps in dvc.yaml to
    its import closure; other deps (data) and comments stay. Returns the stages changed."""
    lines = dvc_yaml.read_text(encoding="utf-8").splitlines(keepends=True)
    scripts = stage_scripts(dvc_yaml)
    changed, out, i, stage = [], [], 0, None
    while i < len(lines):
        line = lines[i]
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            stage = line.strip()[:-1]
        out.append(line)
        if line.strip() == "deps:" and stage in scripts:
            indent = len(lines[i + 1]) - len(lines[i + 1].lstrip())
            j = i + 1
            items = []
            while j < len(lines) and (
                lines[j].strip() == ""
                or (
                    len(lines[j]) - len(lines[j].lstrip()) >= indent
                    and lines[j].lstrip().startswith(("- ", "#"))
                )
            ):
                items.append(lines[j])
                j += 1
            is_code = [it.lstrip().startswith(("- stages/", "- src/maskpipe")) for it in items]
            wanted = code_deps(scripts[stage][0], root)
            new = [" " * indent + f"- {d}\n" for d in wanted] + [
                it for it, c in zip(items, is_code, strict=True) if not c
            ]
            if [it for it, c in zip(items, is_code, strict=True) if c] != new[: len(wanted)]:
                changed.append(stage)
            out.extend(new)
            i = j
            continue
        i += 1
    dvc_yaml.write_text("".join(out), encoding="utf-8")
    return changed


def main(argv: list[str]) -> int:
    if "--fix" in argv:
        changed = fix()
        print(f"dvc.yaml: code deps rewritten for {', '.join(changed) or 'no stage'}")
        return 0
    if "--check" in argv:
        problems = missing_deps()
        for stage, files in problems.items():
            print(f"dvc.yaml: stage '{stage}' runs code missing from its deps: {', '.join(files)}")
        return 1 if problems else 0
    for stage, (script, _deps) in stage_scripts().items():
        print(f"{stage}:")
        for f in sorted(closure(script)):
            print(f"  - {f.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
