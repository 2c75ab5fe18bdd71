"""The sandbox package's layers: what runs inside the sandbox imports nothing but the standard library
(at import time), and no module of the package is too long to read in one sitting."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from thinkbox.sandbox import inside

PACKAGE = Path(inside.__file__).resolve().parents[1].parent  # .../thinkbox
INSIDE = PACKAGE / "sandbox" / "inside"


def _imports(path: Path) -> set[str]:
    """Modules imported when ``path`` is imported (not inside functions: the kernel's ``preload`` imports
    numpy and friends on purpose, where they exist)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.If, ast.Try)):
            todo.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_the_in_sandbox_files_are_one_list_and_import_only_the_standard_library() -> None:
    listed = {PACKAGE / rel for rel in inside.FILES}
    on_disk = set(INSIDE.glob("*.py")) | set(INSIDE.glob("*.js")) | {PACKAGE / "sandbox" / "__init__.py"}
    assert listed == on_disk, f"inside.FILES and the files of sandbox/inside differ: {listed ^ on_disk}"
    for path in sorted(p for p in listed if p.suffix == ".py"):
        for name in _imports(path):
            top = name.split(".")[0]
            ok = top in sys.stdlib_module_names or name == "__future__"
            ok = ok or name == "thinkbox.sandbox.inside" or name.startswith("thinkbox.sandbox.inside.")
            assert ok, f"{path.relative_to(PACKAGE)} imports {name}: only the standard library exists inside"


def test_installed_copy_runs_the_kernel_without_the_rest_of_thinkbox(tmp_path: Path) -> None:
    import subprocess

    inside.install(tmp_path)
    code = (
        "import thinkbox.sandbox.inside.kernel as k, thinkbox.sandbox.inside.launch, sys; print(k.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(str(tmp_path)), out.stdout


def test_no_sandbox_module_is_over_the_size_a_reader_takes_in_one_sitting() -> None:
    sizes = {
        p.relative_to(PACKAGE): len(p.read_text().splitlines()) for p in (PACKAGE / "sandbox").rglob("*.py")
    }
    assert max(sizes.values()) <= 520, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
