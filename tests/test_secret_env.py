"""Secrets reach a run only through the environment: any secret-looking name in cluster.env is refused with
the instruction to export it, and exported ones appear in no file of the run dir and in no printed output.

Through the real CLI (``python -m launcher train``): a dry run, a local run and a SLURM submission on the
test cluster; every file under the run dir is searched for every secret value.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.config.compose import compose_config
from launcher.errors import ConfigError
from launcher.secret_env import is_secret_name, secret_assignments
from launcher.slurm.render import check_no_secrets

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRETS = {"OPENAI_API_KEY": "sk-test-4c1d9e77aa", "HUGGINGFACE_TOKEN": "hf_tok_83be21f0c9",
           "MY_DB_PASSWORD": "pw-0f9e8d7c6b", "WANDB_API_KEY": "wandb-31a7c4e9d2"}
TINY = ["train.max_steps=2", "train.exact_match_samples=0", "train.eval_every=0", "train.save_model=false"]


def launcher(args: list, env_extra: dict, timeout_s: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "launcher", *args], cwd=str(REPO_ROOT), capture_output=True,
                          text=True, env=env, timeout=timeout_s)


def assert_nowhere(root: Path, texts: list, values=SECRETS.values()) -> int:
    """No secret value in any file under ``root`` nor in ``texts``; returns how many files were searched."""
    searched = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            searched += 1
            for value in values:
                assert value.encode() not in data, f"secret written to {path}"
    for text in texts:
        for value in values:
            assert value not in text, "secret printed"
    return searched


def test_secret_names():
    for name in ("OPENAI_API_KEY", "HUGGINGFACE_TOKEN", "hf_token", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD",
                 "WANDB_API_KEY", "HUGGING_FACE_HUB_TOKEN"):
        assert is_secret_name(name), name
    for name in ("NCCL_IB_HCA", "TOKENIZERS_PARALLELISM", "MONKEY", "OMP_NUM_THREADS", "NCCL_DEBUG"):
        assert not is_secret_name(name), name
    assert secret_assignments('export OPENAI_API_KEY=sk-1; export B_TOKEN="$B_TOKEN"; PATH=/x') == ["OPENAI_API_KEY"]


@pytest.mark.parametrize("override,key", [
    ("+cluster.env.OPENAI_API_KEY=sk-test-4c1d9e77aa", "cluster.env.OPENAI_API_KEY"),
    ("+cluster.env.HUGGINGFACE_TOKEN=hf_tok_83be21f0c9", "cluster.env.HUGGINGFACE_TOKEN"),
    ("+cluster.env.my_db_password=pw-0f9e8d7c6b", "cluster.env.my_db_password"),
    ("cluster.setup=['export OPENAI_API_KEY=sk-test-4c1d9e77aa']", "cluster.setup[0]"),
])
def test_a_secret_in_the_config_is_refused_with_what_to_do(override, key):
    cfg = compose_config(["cluster=slurm_local", override])
    with pytest.raises(ConfigError) as refused:
        check_no_secrets(cfg, {})
    message = str(refused.value)
    assert message.startswith(f"{key}: ") and "export" in message and "in the shell" in message
    assert not any(v in message for v in SECRETS.values())


def test_the_value_of_an_exported_secret_is_refused_in_the_config():
    cfg = compose_config(["cluster=slurm_local", "+cluster.sbatch_extra.mail-user=sk-test-4c1d9e77aa"])
    with pytest.raises(ConfigError, match="cluster.sbatch_extra.mail-user: holds the value of OPENAI_API_KEY"):
        check_no_secrets(cfg, {"OPENAI_API_KEY": "sk-test-4c1d9e77aa"})


@pytest.mark.parametrize("kind", ["local", "slurm_local"])
def test_cli_refuses_secret_in_cluster_env_and_writes_nothing(tmp_path, kind, request):
    if kind == "slurm_local":
        request.getfixturevalue("slurm_cluster")
    for dry in (["--dry-run"], []):
        done = launcher(["train", f"cluster={kind}", f"run.output_root={tmp_path}", *TINY,
                         "+cluster.env.OPENAI_API_KEY=sk-test-4c1d9e77aa", *dry], {})
        assert done.returncode != 0
        assert "cluster.env.OPENAI_API_KEY: looks like a secret" in done.stderr
        assert "export OPENAI_API_KEY in the shell" in done.stderr
        assert list(tmp_path.iterdir()) == []
        assert_nowhere(tmp_path, [done.stdout, done.stderr])


def test_exported_secrets_reach_no_file_of_a_local_run(tmp_path):
    dry = launcher(["train", f"run.output_root={tmp_path}", *TINY, "+cluster.env.MY_SETTING=plain", "--dry-run"],
                   SECRETS)
    assert dry.returncode == 0, dry.stderr
    assert "MY_SETTING: plain" in dry.stdout  # the resolved config is printed; secrets are not in it
    done = launcher(["train", f"run.output_root={tmp_path}", *TINY, "+cluster.env.MY_SETTING=plain"], SECRETS)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = Path(re.search(r"run dir: (\S+)", done.stdout).group(1))
    assert (run_dir / "metrics.jsonl").is_file()
    assert "MY_SETTING: plain" in (run_dir / "config.yaml").read_text()
    assert assert_nowhere(tmp_path, [dry.stdout, dry.stderr, done.stdout, done.stderr]) > 10


def test_exported_secrets_reach_a_slurm_job_but_no_file(tmp_path, slurm_cluster):
    from tests.slurm.test_cluster_jobs import assert_completed, node_logs

    # The job proves it got the secret by its length only (printenv's count includes the newline).
    setup = "cluster.setup=['echo secret length $(printenv OPENAI_API_KEY | wc -c)']"
    args = ["train", "cluster=slurm_local", f"run.output_root={tmp_path}", *TINY, setup]
    dry = launcher([*args, "--dry-run"], SECRETS)
    assert dry.returncode == 0, dry.stderr
    done = launcher(args, SECRETS)
    assert done.returncode == 0, done.stderr[-3000:]
    job_id = re.search(r"Submitted SLURM job (\d+)", done.stdout).group(1)
    run_dir = Path(re.search(r"run dir: (\S+)", done.stdout).group(1))
    assert_completed(run_dir, job_id)
    assert f"secret length {len(SECRETS['OPENAI_API_KEY']) + 1}" in node_logs(run_dir, job_id)
    assert assert_nowhere(tmp_path, [dry.stdout, dry.stderr, done.stdout, done.stderr]) > 10
    # The node's command.txt is the argv it ran, quoted: it reads back as one --run-dir of this run.
    argv = shlex.split((run_dir / "logs" / "node0" / "command.txt").read_text().replace("\\\n", ""))
    assert argv[-2:] == ["--run-dir", str(run_dir)] and "-m" in argv
