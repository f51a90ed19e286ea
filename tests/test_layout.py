"""The repository's shape: libraries below, doors above, imports only downwards, no cycles (imports inside
functions count), and doors that reject a bad argument in one line before importing torch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("preprocessing", "pretrain")
# Each layer may import only from the layers before it (and from itself).
LAYERS = ("preprocessing", "pretrain", "pretrain.evaluation")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, wherever the import statement is (top level or inside a function)."""
    name = module_name(path)
    package = name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            # `from package import module` imports a module too
            found.update(f"{base}.{alias.name}" for alias in node.names)
            found.add(base)
    return found


def project_modules(*folders: str) -> dict[str, Path]:
    return {module_name(p): p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))}


MODULES = project_modules(*LIBRARIES)
GRAPH = {name: {m for m in imports_of(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def layer(module: str) -> int:
    return max(i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + "."))


def test_libraries_import_only_downwards():
    upward = [(m, dep) for m, deps in GRAPH.items() for dep in deps if layer(dep) > layer(m)]
    assert not upward, upward
    outside = [(name, m) for name, path in MODULES.items() for m in imports_of(path)
               if m.split(".")[0] in ("launch", "benchmarks", "tests")]
    assert not outside, outside


def test_no_import_cycles():
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(GRAPH):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_nothing_imports_the_trainer():
    users = sorted(m for m, deps in GRAPH.items() if "pretrain.trainer" in deps)
    assert users == []


def test_doors_only_combine():
    """launch/ holds thin doors: they import the libraries, never each other or the benchmarks, and define
    no classes (logic belongs in a library, where tests import it)."""
    for path in sorted((ROOT / "launch").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert not [n.name for n in tree.body if isinstance(n, ast.ClassDef)], path
        others = [m for m in imports_of(path) if m.split(".")[0] in ("launch", "benchmarks")]
        assert not others, (path, others)


# A bad argument for each door, and what the one-line error must say.
DOORS = {
    "preprocess.py": (["out_dir=x", "num_wrkers=2"], "num_wrkers"),
    "pretrain.py": (["trainer.max_stepz=3"], "max_stepz"),
    "export.py": (["checkpoint=x", "outt=y"], "'outt=y'"),
    "init_model.py": (["xlmr=x", "entity_vocab=y"], "missing required argument(s): out=..."),
    "evaluate.py": (["model=x", "facts=y", "batch_size=many"], "batch_size must be an integer"),
    "convert_facts.py": (["source=mlama", "root=x"], "missing required argument(s): out=..."),
    "report.py": (["run=x"], "'run=x'"),
    "quickstart.py": (["steps=lots"], "steps must be an integer"),
}
# Runs a door in this interpreter and reports whether torch had been imported when it stopped.
PROBE = """
import runpy, sys
door, args = sys.argv[1], sys.argv[2:]
sys.argv = [door, *args]
try:
    runpy.run_path(door, run_name="__main__")
except SystemExit as e:
    code = e.code
    if isinstance(code, str):  # what the interpreter prints for sys.exit("message")
        sys.stderr.write(code + "\\n")
else:
    code = 0
sys.stdout.write(f"exit={code!r} torch={'torch' in sys.modules}\\n")
"""


def test_every_door_is_listed():
    assert sorted(DOORS) == sorted(p.name for p in (ROOT / "launch").glob("*.py"))


@pytest.mark.parametrize("door", sorted(DOORS))
def test_bad_argument_is_one_line_before_torch_loads(door):
    args, message = DOORS[door]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "launch" / door), *args], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120)
    assert "exit=0" not in out.stdout and "exit=None" not in out.stdout, out
    assert "torch=False" in out.stdout, out.stdout
    errors = [line for line in out.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in out.stderr and message in out.stderr, out.stderr
    # one line, plus Hydra's own hint to set HYDRA_FULL_ERROR for a stack trace
    assert len([line for line in errors if "HYDRA_FULL_ERROR" not in line]) == 1, errors
