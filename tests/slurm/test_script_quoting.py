"""Hostile values in the cluster group: refused when they hold a control character, plain text otherwise.

Every string key of ``cluster`` (and the run dir, which reaches #SBATCH --comment/--chdir, the setup lines and
srun's options) gets ``$(...)``, backticks, both quotes and ``;``: the script passes ``bash -n``, has the
same lines as with plain values, each #SBATCH value reads back exactly, and running its shell part (srun
replaced by a recorder) executes nothing and exports the values unchanged. The printed per-node command
(``render_plan``) and the node's command.txt (``format_command``) give their argv back through bash and
through ``shlex.split``. No cluster needed.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import typing
from pathlib import Path

import pytest

from launcher.config.compose import compose_config, compose_dict
from launcher.config.schema import ClusterConfig, parse_config
from launcher.errors import ConfigError
from launcher.shell import unplaceholder
from launcher.slurm.render import format_command, render_sbatch, render_torchrun_command
from launcher.launch.slurm_submit import render_plan


def hostile(tag: str, marks: Path) -> str:
    """A value that runs `touch MARK` if any shell evaluates it, with both quotes and a ;."""
    return f"{tag}$(touch {marks}/{tag}-dollar)`touch {marks}/{tag}-tick`';touch {marks}/{tag}-semi;'\"x\"\\ {tag}"


def string_keys() -> list:
    """Every str / Optional[str] field of ClusterConfig (list and dict keys are covered separately)."""
    hints = typing.get_type_hints(ClusterConfig)
    return [f.name for f in dataclasses.fields(ClusterConfig) if hints[f.name] in (str, typing.Optional[str])]


SHAPE = ["cluster=slurm_local", "cluster.nodes=2", "cluster.setup=[module load cuda]"]


def cluster_with(values: dict, base: list = SHAPE) -> "object":
    data = compose_dict(base)
    for key, value in values.items():
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return parse_config(data)


def test_every_string_key_of_the_cluster_group_refuses_control_characters():
    keys = [k for k in string_keys() if k != "kind"]
    assert {"partition", "account", "qos", "constraint", "container_image", "container_python"} <= set(keys)
    cases = {f"cluster.{k}": "ok\nsrun rm -rf ~" for k in keys}
    cases.update({"cluster.env.MY_VAR": "a\nb", "cluster.sbatch_extra.mail-user": "x\r\ny",
                  "cluster.container_mounts": ["/data:/data\n"], "cluster.setup": ["module load cuda\ntouch x"],
                  "run.output_root": "/tmp/a\x1b[2Jb", "run.name": "n\x00m", "data.dataset_dir": "d\u2028x"})
    for key, value in cases.items():
        with pytest.raises(ConfigError) as refused:
            cluster_with({key: value})
        shown = key if not isinstance(value, list) else f"{key}[0]"
        assert str(refused.value).startswith(f"{shown}: the value "), str(refused.value)
        assert "must be one line of printable text" in str(refused.value)
    # A dict key too, and option/variable names that would be written as they are.
    with pytest.raises(ConfigError, match=r"cluster.env.A\nB: the name"):
        cluster_with({"cluster.env": {"A\nB": "1"}})
    with pytest.raises(ConfigError, match="cluster.sbatch_extra.x=1 ;y: not an sbatch option name"):
        cluster_with({"cluster.sbatch_extra": {"x=1 ;y": "v"}})
    with pytest.raises(ConfigError, match="cluster.env.A-B: not a valid environment variable name"):
        cluster_with({"cluster.env": {"A-B": "v"}})
    # Tabs are indentation in a setup line, not elsewhere.
    assert cluster_with({"cluster.setup": ["if true; then\n"[:-1], "\tmodule load x", "fi"]}).cluster.setup[1] == "\tmodule load x"
    with pytest.raises(ConfigError, match="cluster.partition: the value 'a\\\\tb' holds a tab"):
        cluster_with({"cluster.partition": "a\tb"})


def test_a_newline_from_the_command_line_is_refused_before_anything_is_written(tmp_path):
    """`launcher train cluster.qos=$'high\\n...'` (quoted for Hydra): the preflight names the key, no run dir."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [os.sys.executable, "-m", "launcher", "train", "cluster=slurm_local", f"run.output_root={tmp_path}",
         f"cluster.qos='high\ntouch {tmp_path}/pwned'", "--dry-run"],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    assert "cluster.qos: the value 'high\\ntouch" in done.stderr and "holds a newline" in done.stderr
    assert list(tmp_path.iterdir()) == []


def script_shape(script: str) -> list:
    """What each line is, without its value: '#SBATCH --qos', 'export NCCL_IB_HCA', 'srun', ..."""
    shape = []
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            shape.append(line.split("=", 1)[0])
        elif line.startswith("export "):
            shape.append(line.split("=", 1)[0])
        else:
            shape.append(line.split(" ", 1)[0])
    return shape


def sbatch_values(script: str) -> dict:
    """{option: value} as a shell-like reader (sbatch's) takes each #SBATCH line apart."""
    out = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            (word,) = shlex.split(line[len("#SBATCH "):])
            option, _, value = word.partition("=")
            out[option] = value
    return out


def run_shell_part(script: str, tmp_path: Path) -> tuple:
    """Run the script with bash, srun replaced by a function that records its argv and environment."""
    path = tmp_path / "job.sh"
    path.write_text(script)
    record = tmp_path / "record"
    record.mkdir()
    wrapper = ('srun() { printf "%s\\0" "$@" > "$REC/argv"; env -0 > "$REC/env"; }; source "$1"')
    done = subprocess.run(["bash", "-c", wrapper, "_", str(path)], cwd=str(tmp_path), capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "REC": str(record)}, timeout=60)
    assert done.returncode == 0, done.stderr
    argv = (record / "argv").read_text().split("\0")[:-1]
    env = dict(item.split("=", 1) for item in (record / "env").read_text().split("\0") if "=" in item)
    return argv, env


@pytest.mark.parametrize("container", ["image", "prefix"])
def test_hostile_values_stay_plain_text_in_the_sbatch_script(tmp_path, container):
    marks = tmp_path / "marks"
    marks.mkdir()
    values = {f"cluster.{k}": hostile(k, marks) for k in ("partition", "account", "qos", "constraint", "name",
                                                            "nccl_socket_ifname", "nccl_ib_hca", "container_python")}
    values["cluster.env"] = {"MY_VAR": hostile("env", marks)}
    values["cluster.sbatch_extra"] = {"mail-user": hostile("extra", marks)}
    if container == "image":
        values["cluster.container_image"] = hostile("image", marks)
        values["cluster.container_mounts"] = [hostile("mount", marks)]
    else:
        values["cluster.container_prefix"] = f"apptainer exec {shlex.quote(hostile('prefix', marks))}"
    cfg = cluster_with(values)
    plain = cluster_with({k: ({"MY_VAR": "v"} if k == "cluster.env" else {"mail-user": "v"}
                              if k == "cluster.sbatch_extra" else ["m"] if k == "cluster.container_mounts"
                              else "apptainer exec img" if k == "cluster.container_prefix" else "v")
                          for k in values})
    run_dir = tmp_path / hostile("rundir", marks)
    script = render_sbatch(cfg, run_dir, python=shlex.quote("/opt/venv/bin/python"), repo_root=run_dir / "code")
    baseline = render_sbatch(plain, tmp_path / "run", python="/opt/venv/bin/python", repo_root=tmp_path / "run" / "code")

    checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    # The same lines as with plain values: no line was added or split, --requeue/--signal/--time are all there.
    assert script_shape(script) == script_shape(baseline)
    sbatch = sbatch_values(script)
    for option in ("requeue", "signal", "time", "nodes"):
        assert f"--{option}" in sbatch
    for key in ("partition", "account", "qos", "constraint"):
        assert sbatch[f"--{key}"] == getattr(cfg.cluster, key)
    assert sbatch["--mail-user"] == cfg.cluster.sbatch_extra["mail-user"]
    assert sbatch["--comment"] == f"launcher:{run_dir}" and sbatch["--chdir"] == str(run_dir / "code")

    argv, env = run_shell_part(script, tmp_path)
    assert sorted(p.name for p in marks.iterdir()) == [], "a value was run as a command"
    assert env["MY_VAR"] == cfg.cluster.env["MY_VAR"]
    assert env["NCCL_SOCKET_IFNAME"] == cfg.cluster.nccl_socket_ifname and env["NCCL_IB_HCA"] == cfg.cluster.nccl_ib_hca
    assert env["PYTHONPATH"].split(":")[0] == str(run_dir / "code")
    if container == "image":
        assert f"--container-image={cfg.cluster.container_image}" in argv
        assert argv[argv.index("-u") - 1] == cfg.cluster.container_python  # the image's Python, one word
        assert any(a.startswith(f"--container-mounts={cfg.cluster.container_mounts[0]},") for a in argv)
    else:
        assert argv[argv.index("-u") - 1] == "/opt/venv/bin/python"
    assert argv[-1] == str(run_dir / "slurm")


def bash_argv(command: str, env: dict) -> list:
    """The argv bash gives a pasted command (its first word replaced by a recorder)."""
    done = subprocess.run(["bash", "-c", 'args() { printf "%s\\0" "$@"; }; args ' + command], capture_output=True,
                          text=True, env={"PATH": os.environ["PATH"], **env}, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\0")[:-1]


def test_printed_command_and_command_txt_round_trip_to_the_exact_argv(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    run_dir = tmp_path / hostile("rundir", marks)
    prefix = f"apptainer exec -B {shlex.quote(hostile('bind', marks))} img.sif"
    cfg = cluster_with({"cluster.container_prefix": prefix, "cluster.container_python": hostile("py", marks)})

    # command.txt: what the node writes for the argv it runs.
    argv = render_torchrun_command(cfg, run_dir, "10.0.0.1", 23456, "123", 1, python="/opt/python")
    text = format_command(argv)
    assert shlex.split(text.replace("\\\n", "")) == argv
    assert bash_argv(text, {}) == argv

    # The dry run's per-node command: node-side values are placeholders, expanded by the shell, nothing else.
    plan = render_plan(cfg, run_dir, python="/opt/python")
    command = plan.split("\n")
    start = next(i for i, line in enumerate(command) if line.startswith("apptainer "))
    printed = "\n".join(command[start:]).strip()
    planned = render_torchrun_command(cfg, run_dir, "$HEAD_ADDR", "$PORT", "$SLURM_JOB_ID", "$SLURM_NODEID",
                                      python="/opt/python")
    assert shlex.split(printed.replace("\\\n", "")) == [unplaceholder(a) for a in planned]
    expanded = bash_argv(printed, {"HEAD_ADDR": "10.0.0.9", "PORT": "20001", "SLURM_JOB_ID": "77", "SLURM_NODEID": "1"})
    assert "--rdzv-endpoint=10.0.0.9:20001" in expanded and "--rdzv-id=77" in expanded
    assert f"--log-dir={run_dir}/logs/node1" in expanded and expanded[-1] == str(run_dir)
    assert expanded[expanded.index("img.sif") + 1] == cfg.cluster.container_python
    assert sorted(p.name for p in marks.iterdir()) == [], "a value was run as a command"


def test_dry_run_command_lines_quote_user_text():
    """The UI's and the LLaMA-Factory translation's `launcher train ...` lines use the same quoting."""
    from launcher.config.llamafactory import command_line
    from launcher.ui.form import train_command

    overrides = ["run.name=$(id)", "cluster.qos=`id`;x"]
    for line in (train_command(overrides, name="a'b"), command_line(overrides)):
        words = shlex.split(line)
        assert words[:2] == ["launcher", "train"] and "run.name=$(id)" in words and "cluster.qos=`id`;x" in words
    assert shlex.split(train_command(overrides, name="a'b"))[-1] == "a'b"
    assert compose_config(["cluster=slurm_local"]).cluster.kind == "slurm"


def test_a_newline_from_the_ui_fields_or_overrides_box_is_refused():
    """The Compose tab's partition/account fields and its overrides box reach the same schema check."""
    from launcher.ui import actions, form

    groups = {"cluster": "slurm_local"}
    defaults = form.field_defaults(compose_dict(form.group_overrides(groups)))
    for fields, free in (({"cluster.partition": "debug\ntouch /tmp/pwned"}, ""),
                         ({"cluster.account": "acct\r\nsrun x"}, ""),
                         ({}, "\"cluster.qos='high\ntouch /tmp/pwned'\"")):
        overrides = form.form_overrides(groups, fields, free, defaults)
        shown = actions.preview(overrides)
        assert not shown.ok and shown.plan == ""  # refused, and no script rendered from the value
        key = next(iter(fields), "cluster.qos")
        said = [shown.error, *shown.verdict]
        assert any(s.startswith(f"{key}: the value") and "one line of printable text" in s for s in said), said
