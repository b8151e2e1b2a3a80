"""A rank payload that says where its code came from: rank 0 writes RUN_DIR/code_origin.json with the file
``launcher`` was imported from, the recipes package's file, the cwd and where data resolves (REPO_ROOT).

Run as ``python -m tests.slurm.payload_code_origin --run-dir RUN_DIR``.
"""
import argparse
import json
import os
from pathlib import Path

import launcher
import launcher.paths
import recipes

parser = argparse.ArgumentParser()
parser.add_argument("--run-dir", required=True)
args = parser.parse_args()
if os.environ.get("RANK", "0") == "0":
    Path(args.run_dir, "code_origin.json").write_text(json.dumps({
        "launcher": launcher.__file__,
        "recipes": recipes.__file__ if getattr(recipes, "__file__", None) else list(recipes.__path__)[0],
        "cwd": os.getcwd(),
        "repo_root": str(launcher.paths.REPO_ROOT),
        "code_root": str(launcher.paths.CODE_ROOT),
    }))
