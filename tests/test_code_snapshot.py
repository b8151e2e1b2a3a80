"""A queued job runs the code it was submitted with: the run dir's code snapshot (RUN_DIR/code), what it
holds, that the ranks import from it, and that later edits to the checkout leave it alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from launcher.config.compose import compose_config
from launcher.launch.local import snapshot_env
from launcher.paths import CODE_ROOT, CODE_SNAPSHOT_DIR, REPO_ROOT, SNAPSHOT_SOURCE_FILE
from launcher.launch.rundir import SNAPSHOT_TREES, snapshot_code
from launcher.slurm.node import rank_pythonpath
from launcher.slurm.render import render_sbatch
from launcher.launch.slurm_submit import render_plan


def fake_checkout(root: Path) -> Path:
    for tree in SNAPSHOT_TREES:
        (root / tree).mkdir(parents=True)
        (root / tree / "mod.py").write_text(f"WHAT = '{tree} v1'\n")
    (root / "launcher" / "__pycache__").mkdir()
    (root / "launcher" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0" * 64)
    (root / "launcher" / "new_untracked.py").write_text("NEW = 1\n")
    (root / "data").mkdir()
    (root / "data" / "big.json").write_text("[]" * 1000)
    return root


def test_snapshot_holds_the_code_not_the_data_and_ignores_later_edits(tmp_path):
    checkout = fake_checkout(tmp_path / "checkout")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    code = snapshot_code(run_dir, code_root=checkout, checkout=checkout)
    assert code == run_dir / CODE_SNAPSHOT_DIR
    assert sorted(p.name for p in code.iterdir()) == sorted([*SNAPSHOT_TREES, SNAPSHOT_SOURCE_FILE])
    assert (code / "launcher" / "new_untracked.py").read_text() == "NEW = 1\n"  # what a git diff would miss
    assert not (code / "launcher" / "__pycache__").exists() and not (code / "data").exists()
    assert (code / SNAPSHOT_SOURCE_FILE).read_text().strip() == str(checkout.resolve())
    # The checkout changes after submit (an edit, a pull): the run dir still holds what was submitted,
    # also when the run is submitted again (a requeue keeps the first snapshot).
    (checkout / "launcher" / "mod.py").write_text("WHAT = 'launcher v2'\n")
    (checkout / "recipes" / "mod.py").unlink()
    assert snapshot_code(run_dir, code_root=checkout, checkout=checkout) == code
    assert (code / "launcher" / "mod.py").read_text() == "WHAT = 'launcher v1'\n"
    assert (code / "recipes" / "mod.py").read_text() == "WHAT = 'recipes v1'\n"
    assert not list(run_dir.glob(".code*"))  # no half-written copy left behind


def test_real_snapshot_is_small_and_ranks_import_from_it(tmp_path):
    code = snapshot_code(tmp_path, code_root=CODE_ROOT, checkout=REPO_ROOT)
    size = sum(p.stat().st_size for p in code.rglob("*") if p.is_file())
    print(f"code snapshot: {size / 1e6:.2f} MB, {sum(1 for _ in code.rglob('*.py'))} .py files")
    assert size < 5e6
    # A rank started as the SLURM node starts it (cwd and PYTHONPATH the snapshot) imports the snapshot's code,
    # and still finds data/ and the cache in the checkout.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, "-c", "import json, launcher.paths as p, recipes.sft as r; print(json.dumps("
         "[p.__file__, str(p.CODE_ROOT), str(p.REPO_ROOT), r.__file__]))"],
        cwd=code, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    paths_file, code_root, repo_root, recipe_file = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(paths_file).is_relative_to(code) and Path(recipe_file).is_relative_to(code)
    assert Path(code_root) == code and Path(repo_root) == REPO_ROOT.resolve()


def test_rendered_sbatch_and_plan_point_at_the_snapshot(tmp_path):
    cfg = compose_config(["cluster=slurm_local", "cluster.nodes=2", "cluster.nproc_per_node=1"])
    run_dir = tmp_path / "run"
    plan = render_plan(cfg, run_dir, python="python")
    assert f"export PYTHONPATH={run_dir / 'code'}${{PYTHONPATH:+:$PYTHONPATH}}\n" in plan
    assert f"cd {run_dir / 'code'}; PYTHONPATH={run_dir / 'code'}" in plan
    assert str(REPO_ROOT) not in render_sbatch(cfg, run_dir, "python", run_dir / "code")


def test_rank_pythonpath_and_local_env(tmp_path):
    assert rank_pythonpath("/x:/y").split(os.pathsep) == [str(CODE_ROOT), "/x", "/y"]
    assert rank_pythonpath(None) == str(CODE_ROOT)
    (tmp_path / CODE_SNAPSHOT_DIR).mkdir()
    env = snapshot_env({"PYTHONPATH": "/x"}, tmp_path)
    assert env["PYTHONPATH"] == os.pathsep.join([str(tmp_path / CODE_SNAPSHOT_DIR), "/x"])
    assert env["PYTHONSAFEPATH"] == "1"  # a checkout in the cwd cannot shadow the snapshot (Python >= 3.11)
    assert snapshot_env({"A": "1"}, tmp_path / "none") == {"A": "1"}
