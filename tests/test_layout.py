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


def _unit(module: str) -> str:
    """The part of launcher a module belongs to: its subpackage, or itself for a root module (launcher.cli)."""
    return module.split(".")[1]


def _library_imports():
    """(importing module, imported launcher module, names taken from it, line) for every import in launcher/,
    at the top or inside functions; relative imports resolved."""
    for path in sorted((REPO / "launcher").rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        package = parts[:-1]  # what a relative import starts from, for a module and an __init__ alike
        module = ".".join(parts if parts[-1] != "__init__" else parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield module, alias.name, (), node.lineno
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:
                    base = package[:len(package) - (node.level - 1)]
                    target = ".".join(base + ([target] if target else []))
                names = tuple(alias.name for alias in node.names)
                yield module, target, names, node.lineno
                for name in names:  # from launcher import cli, data: the module launcher.cli, the package
                    found = REPO / (target + "." + name).replace(".", "/")
                    if found.with_suffix(".py").is_file() or found.is_dir():
                        yield module, f"{target}.{name}", (), node.lineno


def strongly_connected(graph: dict[str, set]) -> list[list[str]]:
    """The groups of nodes that reach each other (Tarjan), those with more than one node, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_cycle_among_launchers_packages():
    """Dependencies point one way: no two parts of launcher (a subpackage, or a root module) import each other,
    however indirectly, counting imports inside functions. A cycle means the contract they share has no home."""
    graph: dict[str, set] = {}
    where: dict[tuple, str] = {}
    for module, target, _, line in _library_imports():
        if module.count(".") < 1 or not target.startswith("launcher.") or _unit(module) == _unit(target):
            continue
        graph.setdefault(_unit(module), set()).add(_unit(target))
        where.setdefault((_unit(module), _unit(target)), f"{module}:{line} imports {target}")
    cycles = []
    for members in strongly_connected(graph):
        inside = [where[a, b] for a in members for b in members if (a, b) in where]
        cycles.append(f"{', '.join(members)}: " + "; ".join(inside))
    assert cycles == [], "package cycles in launcher/:\n" + "\n".join(cycles)


def test_no_private_name_is_imported_across_packages():
    """A name starting with _ is its module's own; another part of launcher that needs it needs it public."""
    offenders = []
    for module, target, names, line in _library_imports():
        if module.count(".") < 1 or not target.startswith("launcher.") or _unit(module) == _unit(target):
            continue
        private = [n for n in names if n.startswith("_")] + [p for p in target.split(".") if p.startswith("_")
                                                              and p != "__init__"]
        if private:
            offenders.append(f"{module}:{line} imports {', '.join(private)} from {target}")
    assert offenders == [], "private names imported across packages:\n" + "\n".join(offenders)


def test_models_is_a_base_layer():
    """launcher.models (tokenizers, vision, the plain build, QLoRA's base) stands on the config and nothing above:
    building for a parallelism is the engines', reading a run back is inference's."""
    below = {"config", "errors", "files", "packages", "paths"}
    above = sorted(f"{module}:{line} imports {target}" for module, target, _, line in _library_imports()
                   if module.startswith("launcher.models") and target.startswith("launcher.")
                   and _unit(target) not in below | {"models"})
    assert above == [], "launcher/models/ imports from above it:\n" + "\n".join(above)
