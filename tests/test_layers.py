"""The layout is the architecture: the path of a module says whether lenstui may import it.

- The torch-free layers, engine/protocol/ and engine/results/ (with engine/config.py,
  engine/files.py and engine/__init__.py), import neither torch nor NumPy, nor anything that
  does, at module level: the engine runs them on every host before torch loads, and lenstui
  runs them on a laptop.
- lenstui imports only those, anywhere in its code (no lazy exception).
- engine never imports lenstui.

Read from the source (every import statement, with its file and line), then confirmed by
importing the torch-free modules in a fresh interpreter. `check_layers` is also run on a
copy of the tree with one rule broken, to show that each rule can fail.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH_FREE_FOLDERS = ("protocol", "results")
TORCH_FREE_FILES = ("__init__.py", "config.py", "files.py", "numbers.py")
# Third-party modules a torch-free module must not load (each pulls in NumPy or worse).
HEAVY = ("torch", "numpy", "scipy", "sklearn", "pandas", "pyarrow", "matplotlib", "threadpoolctl", "isal")


def torch_free_modules(root: Path) -> list[Path]:
    engine = root / "engine"
    out = [engine / name for name in TORCH_FREE_FILES]
    for folder in TORCH_FREE_FOLDERS:
        out += sorted((engine / folder).rglob("*.py"))
    return out


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_torch_free(module: str) -> bool:
    """Whether `module` (an engine module or package) lies in a torch-free layer."""
    parts = module.split(".")
    if parts[0] != "engine":
        return False
    if len(parts) == 1:
        return True
    if parts[1] in TORCH_FREE_FOLDERS:
        return True
    return len(parts) == 2 and f"{parts[1]}.py" in TORCH_FREE_FILES


def imports(path: Path, root: Path, module_level_only: bool) -> list[tuple[int, str]]:
    """(line, imported module) of every import statement in `path` (module level: outside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path, root).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path, root)
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                continue   # `if TYPE_CHECKING:` imports run only under a type checker
            if not (module_level_only and in_function):
                if isinstance(child, ast.Import):
                    found.extend((child.lineno, a.name) for a in child.names)
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1]
                                        + ([base] if base else []))
                    # `from engine import rundir` imports engine.rundir when that is a module
                    for a in child.names:
                        sub = f"{base}.{a.name}"
                        found.append((child.lineno, sub if _is_module(sub, root) else base))
            visit(child, inside)

    visit(tree, False)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_module(name: str, root: Path) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def check_layers(root: Path) -> list[str]:
    """Every import that breaks a rule of the layout, as 'file:line: what'."""
    problems = []
    for path in torch_free_modules(root):
        for line, name in imports(path, root, module_level_only=True):
            top = name.split(".")[0]
            where = f"{path.relative_to(root)}:{line}"
            if top in HEAVY:
                problems.append(f"{where}: a torch-free module imports {name} at module level")
            elif top == "engine" and not is_torch_free(name):
                problems.append(f"{where}: a torch-free module imports {name} (a layer with torch or NumPy) "
                                "at module level")
            elif top == "lenstui":
                problems.append(f"{where}: the engine imports {name}")
    for path in sorted((root / "lenstui").rglob("*.py")):
        for line, name in imports(path, root, module_level_only=False):
            if name.split(".")[0] == "engine" and not is_torch_free(name):
                problems.append(f"{path.relative_to(root)}:{line}: lenstui imports {name}; it may import only "
                                f"engine/{{{','.join(TORCH_FREE_FOLDERS)}}}/, {', '.join(TORCH_FREE_FILES)}")
            if name.split(".")[0] in HEAVY:
                problems.append(f"{path.relative_to(root)}:{line}: lenstui imports {name}")
    for path in sorted((root / "engine").rglob("*.py")):
        for line, name in imports(path, root, module_level_only=False):
            if name.split(".")[0] == "lenstui":
                problems.append(f"{path.relative_to(root)}:{line}: the engine imports {name}")
    return problems


def test_the_layout_holds_every_import_rule():
    assert check_layers(REPO) == []


def test_the_torch_free_modules_import_without_numpy_in_a_fresh_interpreter():
    names = [module_name(p, REPO) for p in torch_free_modules(REPO)]
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == [], f"loaded by the torch-free layers: {done.stdout}"
    assert len(names) >= 10, names


@pytest.mark.parametrize("file, line, says", [
    ("engine/results/verdicts.py", "import numpy as np\n", "a torch-free module imports numpy"),
    ("engine/protocol/status.py", "from engine.training.device import pick_device\n",
     "a torch-free module imports engine.training.device"),
    ("engine/results/report.py", "from engine.data import load\n", "a torch-free module imports engine.data.load"),
    ("lenstui/cells.py", "from engine.data.gates import shortcut_gates\n", "lenstui imports engine.data.gates"),
    ("engine/protocol/launch.py", "import lenstui.fleet\n", "the engine imports lenstui.fleet"),
    # lenstui's rule holds inside functions too: a lazy import of the data layer is still one.
    ("lenstui/screens/cutouts.py", "def _load_here():\n    from engine.data import load\n",
     "lenstui imports engine.data.load"),
])
def test_each_rule_fails_when_it_is_broken(tmp_path, file, line, says):
    copy = tmp_path / "tree"
    for part in ("engine", "lenstui"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / file
    text = target.read_text()
    at = text.index("\nfrom __future__ import annotations\n") + len("\nfrom __future__ import annotations\n")
    target.write_text(text[:at] + line + text[at:])
    problems = check_layers(copy)
    assert any(says in p and p.startswith(file) for p in problems), problems


def test_a_torch_free_module_may_load_heavy_modules_inside_a_function(tmp_path):
    """The report draws with matplotlib and preflight imports torch, each only when asked: allowed."""
    copy = tmp_path / "tree"
    for part in ("engine", "lenstui"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "engine" / "results" / "verdicts.py"
    target.write_text(target.read_text() + "\n\ndef _later():\n    import torch\n    return torch\n")
    assert check_layers(copy) == []
