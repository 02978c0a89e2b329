"""dvc.yaml deps cannot drift: every maskpipe module a stage runs is one of its deps."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _stage_deps():
    spec = importlib.util.spec_from_file_location("stage_deps", REPO / "scripts/stage_deps.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_stage_lists_its_import_closure():
    problems = _stage_deps().missing_deps()
    assert problems == {}, "\n".join(f"{s}: {', '.join(f)}" for s, f in problems.items())


def test_check_names_a_missing_module(tmp_path):
    """A fake repo whose stage imports a module (lazily, through another) it does not list."""
    sd = _stage_deps()
    pkg = tmp_path / "src/maskpipe"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub/__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub/b.py").write_text("def f():\n    from maskpipe import c\n")
    (pkg / "c.py").write_text("import os\n")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages/s.py").write_text("from maskpipe.a import x\n")
    (tmp_path / "dvc.yaml").write_text(
        textwrap.dedent("""\
        stages:
          s:
            foreach: [1, 2]
            do:
              cmd: python stages/s.py ${item}
              deps: [stages/s.py, src/maskpipe/__init__.py, src/maskpipe/a.py, src/maskpipe/sub]
        """)
    )
    assert sd.missing_deps(tmp_path / "dvc.yaml", tmp_path) == {"s": ["src/maskpipe/c.py"]}


def test_a_module_run_by_path_is_a_dep(tmp_path):
    """pyfunc.py hands MLflow pyfunc_model.py by path (models from code): never imported, still run."""
    sd = _stage_deps()
    pkg = tmp_path / "src/maskpipe"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text('from pathlib import Path\nCODE = Path(__file__).with_name("code.py")\n')
    (pkg / "code.py").write_text("import os\n")
    assert sd.closure(pkg / "a.py", tmp_path / "src") == {pkg / "__init__.py", pkg / "code.py"}


def test_check_command_exit_code():
    done = subprocess.run(
        [sys.executable, "scripts/stage_deps.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_import_circles():
    """No two maskpipe modules import each other, directly or round a loop (lazy imports count;
    `if TYPE_CHECKING:` imports do not run, so they do not)."""
    assert _stage_deps().import_cycles() == []


def test_import_cycles_are_found(tmp_path):
    sd = _stage_deps()
    pkg = tmp_path / "maskpipe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from maskpipe import b\n")
    (pkg / "b.py").write_text("def f():\n    from maskpipe.c import g\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from maskpipe import b\nimport maskpipe.a\n"
    )
    assert sd.import_cycles(tmp_path) == [["maskpipe.a", "maskpipe.b", "maskpipe.c"]]
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import maskpipe.a\n")
    assert sd.import_cycles(tmp_path) == []
