"""The package layout's rules: the library never imports a recipe, and the submitting side stays light."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set:
    """Every module a file imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_library_never_imports_a_recipe():
    offenders = {}
    for path in sorted((REPO / "launcher").rglob("*.py")):
        bad = sorted(m for m in imported_modules(path) if m == "recipes" or m.startswith("recipes."))
        if bad:
            offenders[str(path.relative_to(REPO))] = bad
    assert offenders == {}, f"launcher/ must not import recipes (start them by module name): {offenders}"


def test_recipes_are_one_file_per_method_built_on_the_library():
    recipes = sorted(p.name for p in (REPO / "recipes").glob("*.py") if p.name != "__init__.py")
    assert recipes, "no recipes"
    for name in recipes:
        text = (REPO / "recipes" / name).read_text()
        assert text.startswith('"""'), f"recipes/{name} needs a docstring listing what it supports and raises"
        assert "Raises" in text.split('"""')[1], f"recipes/{name}: the docstring names the errors it raises"
        assert "recipe_main(RECIPE)" in text, f"recipes/{name} must be runnable as python -m recipes.{name[:-3]}"


def test_method_table_names_existing_recipes():
    from launcher.config.schema import METHODS

    for method, (module, _) in METHODS.items():
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), f"method {method}: no module {module}"


def _modules_loaded(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, cwd=REPO, check=True, timeout=300)
    return set(out.stdout.split()[-1:] and out.stdout.splitlines()[-1].split())


def test_help_and_text_dry_run_import_neither_torch_nor_transformers(tmp_path):
    help_modules = _modules_loaded("from launcher.cli import main\nmain(['--help'])")
    dry_modules = _modules_loaded(
        "from launcher.cli import main\n"
        f"assert main(['train', '--dry-run', 'run.output_root={tmp_path}']) == 0")
    for modules in (help_modules, dry_modules):
        assert "torch" not in modules and "transformers" not in modules
    assert "hydra" not in help_modules
