"""The import rules of the layout (docs/CONTRACTS.md): data flows down, cli -> pipeline -> stages -> pieces. The
pieces never import the stages or the CLI, and nothing but the CLI imports the CLI (the pipeline also runs as a Ray
job without it). Checked on the source's import statements, including imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "posttrain"
PIECES = ("rl", "preference", "rejection", "calibration", "evaluation", "rollout", "data", "models", "sandbox",
          "merging", "tasks", "training", "report")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offenders(files: list[Path], forbidden: str, root: Path = ROOT.parent) -> dict[str, list[str]]:
    bad = {}
    for path in files:
        hits = sorted(m for m in imports(path) if m == forbidden or m.startswith(forbidden + "."))
        if hits:
            bad[str(path.relative_to(root))] = hits
    return bad


def test_the_pieces_never_import_the_stages_or_the_cli() -> None:
    files = [p for piece in PIECES for p in (ROOT / piece).rglob("*.py")]
    assert len(files) > 50
    assert offenders(files, "posttrain.stages") == {}
    assert offenders(files, "posttrain.cli") == {}


def test_only_the_cli_imports_the_cli() -> None:
    files = [p for p in ROOT.rglob("*.py") if "cli" not in p.relative_to(ROOT).parts]
    assert offenders(files, "posttrain.cli") == {}


def test_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import posttrain.clinic\n\ndef f():\n    from posttrain.cli.common import app\n")
    assert offenders([bad], "posttrain.cli", root=tmp_path) == {"bad.py": ["posttrain.cli.common"]}
