"""What the Compose tab's buttons do, as calls into the CLI's own functions (no Gradio here).

Preview = ``launcher train --dry-run``: compose (the schema's one-line message on a bad value), preflight
(every problem on its own line), the sbatch script and per-node torchrun command or the local command, and
the equivalent ``launcher train ...`` command. Submit = ``launcher train``: the same checks, then a run dir and
``submit_run`` (SLURM, returns once queued) or a detached local process (``launcher.ui.local_job``). A sweep
is ``launcher train -m``: ``launcher.sweep``'s plan, lay-out and job array.
"""
from __future__ import annotations

import functools
import io
import threading
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from launcher.errors import LauncherError, PreflightError
from launcher.ui.i18n import Note


HYDRA_LOCK = threading.RLock()
"""Hydra's GlobalHydra is one per process and the page's handlers run in threads: one compose at a time."""


def one_at_a_time(fn):
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with HYDRA_LOCK:
            return fn(*args, **kwargs)

    return locked


@dataclass
class Preview:
    ok: bool
    """Compose and preflight passed: Submit would queue this."""
    error: str = ""
    """The one-line config message, or the preflight's refusal (one problem per line)."""
    config_yaml: str = ""
    plan: str = ""
    """sbatch script + torchrun command (SLURM), the local command, or the sweep's points and arrays."""
    verdict: list = field(default_factory=list)
    """Preflight: "passed" and warnings (Notes, worded by the page), or one line per problem (the CLI's text)."""
    command: str = ""
    """The equivalent CLI command."""


@one_at_a_time
def is_sweep(overrides: Sequence[str]) -> bool:
    """A grid when any value override lists several values (``a=1,2``) or uses a sweep function."""
    from launcher.sweep.expand import expand_grid

    try:
        return len(expand_grid(list(overrides)).points) > 1
    except LauncherError:
        return False


def preflight_lines(exc: PreflightError) -> list:
    """The refusal as one problem per line (the CLI prints the same text, indented with ``-``)."""
    lines = str(exc).splitlines()
    if len(lines) == 1:
        return [lines[0].replace("preflight refused the run: ", "", 1)]
    return [line.strip()[2:] if line.strip().startswith("- ") else line.strip() for line in lines[1:]]


def secret_values(overrides: Sequence[str]) -> dict:
    """{value: NAME} of secrets typed as overrides (``cluster.env.WANDB_API_KEY=...``; the preflight refuses
    them) and of the secret environment variables this process has."""
    from launcher import secret_env

    found = {}
    for item in overrides:
        key, _, value = item.partition("=")
        name = key.rsplit(".", 1)[-1].upper()
        if secret_env.is_secret_name(name) and len(value.strip("'\"")) >= 4:
            found[value.strip("'\"")] = name
    found.update(secret_env.secret_values())
    return found


def redact(text: str, overrides: Sequence[str]) -> str:
    for value, name in secret_values(overrides).items():
        text = text.replace(value, f"<{name}>")
    return text


def hide_secrets(result: "Preview", overrides: Sequence[str]) -> "Preview":
    """Every text the page shows with secret values replaced by ``<NAME>``: never shown, not even back to
    the one who typed them (a screen is shared, recorded, screenshotted)."""
    def hide(text):
        if isinstance(text, Note):
            return Note(text.name, **{k: hide(v) for k, v in text.params.items()})
        return redact(text, overrides) if isinstance(text, str) else text

    result.error, result.config_yaml, result.plan = hide(result.error), hide(result.config_yaml), hide(result.plan)
    result.command, result.verdict = hide(result.command), [hide(v) for v in result.verdict]
    return result


def preview(overrides: Sequence[str], name: Optional[str] = None) -> Preview:
    """``launcher train [-m] OVERRIDES --dry-run``, as data for the page (secret values hidden)."""
    return hide_secrets(_preview(overrides, name), overrides)


@one_at_a_time
def _preview(overrides: Sequence[str], name: Optional[str] = None) -> Preview:
    from launcher.ui.form import train_command

    overrides = list(overrides)
    if is_sweep(overrides):
        return preview_sweep(overrides, name)
    import yaml

    from launcher.config.compose import compose_config, default_run_name
    from launcher.config.schema import config_to_dict
    from launcher.preflight import run_preflight

    command = train_command(overrides, name)
    try:
        cfg = compose_config(overrides)
        run_name = default_run_name(cfg, name)
    except LauncherError as exc:
        return Preview(ok=False, error=str(exc), command=command)
    result = Preview(ok=True, config_yaml=yaml.safe_dump(config_to_dict(cfg), sort_keys=False), command=command)
    try:
        warnings = run_preflight(cfg)
        result.verdict = [Note("verdict_passed")] + [Note("verdict_warning", detail=w) for w in warnings]
    except PreflightError as exc:
        result.ok = False
        result.verdict = preflight_lines(exc)
        result.error = str(exc).splitlines()[0]
    try:
        if cfg.cluster.kind == "slurm":
            from launcher.slurm.submit import render_plan

            would_be = Path(cfg.run.output_root).resolve() / run_name / "<date>" / "<time>"
            result.plan = render_plan(cfg, would_be)
        else:
            from launcher.local import describe_local

            result.plan = describe_local(cfg)
    except LauncherError as exc:
        result.ok = False
        result.error = result.error or str(exc)
        result.verdict.append(str(exc))
    return result


def preview_sweep(overrides: list, name: Optional[str]) -> Preview:
    """``launcher train -m ... --dry-run``: every point composed and preflighted, the arrays it would queue."""
    from launcher.sweep.plan import describe, plan_sweep
    from launcher.ui.form import train_command

    command = train_command(overrides, name, sweep=True)
    stderr = io.StringIO()
    try:
        with redirect_stderr(stderr):
            sweep_name, points, grid = plan_sweep(overrides, name)
    except LauncherError as exc:
        lines = str(exc).splitlines()
        return Preview(ok=False, error=lines[0], verdict=[line.strip() for line in lines], command=command)
    import yaml

    from launcher.config.schema import config_to_dict

    warnings = [line for line in stderr.getvalue().splitlines() if line.strip()]
    return Preview(ok=True, config_yaml=yaml.safe_dump(config_to_dict(points[0].cfg), sort_keys=False),
                   plan=describe(sweep_name, points, grid), verdict=[Note("verdict_passed_sweep")] + warnings,
                   command=command)


@dataclass
class Submitted:
    run_dir: Path
    """The run dir, or the sweep dir."""
    note: Note
    """What was done, for the page to word in its language."""
    job_id: str = ""

    @property
    def message(self) -> str:
        return str(self.note)


@one_at_a_time
def submit(overrides: Sequence[str], name: Optional[str] = None) -> Submitted:
    """``launcher train [-m] OVERRIDES``: refuse before anything is written, else queue or start; return at once.

    Raises LauncherError (ConfigError, PreflightError) with the message the CLI would print.
    """
    overrides = list(overrides)
    if is_sweep(overrides):
        return submit_sweep(overrides, name)
    from launcher.config.compose import REPO_ROOT, compose_config, default_run_name
    from launcher.preflight import run_preflight
    from launcher.rundir import new_run

    cfg = compose_config(overrides)
    run_name = default_run_name(cfg, name)
    run_preflight(cfg)
    run_dir = new_run(cfg, run_name, overrides, REPO_ROOT)
    if cfg.cluster.kind == "slurm":
        from launcher.slurm.submit import submit_run

        info = submit_run(cfg, run_dir, quiet=True)
        return Submitted(run_dir, Note("submitted_slurm", job_id=info["job_id"], run_dir=run_dir), str(info["job_id"]))
    from launcher.ui.local_job import start_detached

    pid = start_detached(["--run-dir", str(run_dir)], run_dir)
    return Submitted(run_dir, Note("started_local", pid=pid, run_dir=run_dir))


def submit_sweep(overrides: list, name: Optional[str]) -> Submitted:
    """A grid: on SLURM one job array per resource shape (``launch_sweep``); here, the points one after
    another in one detached process (``launcher.sweep.run_local_sweep``)."""
    from launcher.config.compose import compose_config
    from launcher.sweep.expand import expand_grid
    from launcher.sweep.launch import launch_sweep
    from launcher.sweep.plan import lay_out, plan_sweep

    stderr = io.StringIO()
    if compose_config(expand_grid(overrides).points[0]).cluster.kind == "slurm":
        with redirect_stderr(stderr):
            result = launch_sweep(overrides, name, quiet=True)
        arrays = ", ".join(a["array_job_id"] for a in result["arrays"])
        return Submitted(Path(result["sweep_dir"]), Note("submitted_sweep", points=len(result["points"]), arrays=arrays,
                                                         sweep_dir=result["sweep_dir"]), arrays)
    with redirect_stderr(stderr):
        sweep_name, points, grid = plan_sweep(overrides, name)
    sweep_dir, _ = lay_out(sweep_name, points, grid, overrides)
    from launcher.ui.local_job import start_detached

    pid = start_detached(["--sweep-dir", str(sweep_dir)], sweep_dir)
    return Submitted(sweep_dir, Note("started_local_sweep", points=len(points), pid=pid, sweep_dir=sweep_dir))



# ------------------------------------------------------------------------------------------ data preview

PREVIEW_IMAGE_PX = 384
"""Longest side of an image as the preview shows it (the page needs a glance, not the pixels)."""


@dataclass
class DataPreview:
    samples: list
    """``launcher.data.cli.PreviewSample`` of the first rows."""
    stats: dict
    images: list = field(default_factory=list)
    """[(PIL image or None, Note caption)] for every image of the samples shown, in order."""


def image_file(dataset_dir: Path, name: str) -> Path:
    """An image a row names (absolute, or relative to the dataset dir), refused outside the dataset dir."""
    from launcher.errors import DataError

    root = Path(dataset_dir).resolve()
    path = (root / name).resolve()  # an absolute name stays absolute
    if root not in path.parents:
        raise DataError(f"{name}: not under the dataset dir {root}; the preview shows only the dataset's own files")
    if not path.is_file():
        raise DataError(f"{name}: no such file under {root}")
    return path


def load_preview_image(path: Path) -> tuple:
    """(the image made small, its own "WxH"): a page holds a few of them, not their full pixels."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        small = image.convert("RGB")
    size = f"{small.width}x{small.height}"
    small.thumbnail((PREVIEW_IMAGE_PX, PREVIEW_IMAGE_PX))
    return small, size


def data_preview(overrides: Sequence[str], n: int = 3) -> DataPreview:
    """``launcher data preview OVERRIDES -n N`` as data for the page, plus each sample's images from the raw
    files. ConfigError/DataError as the CLI would print them."""
    from launcher.data import resolve_dataset_dir
    from launcher.data.cli import preview_config

    with HYDRA_LOCK:  # only the compose: tokenizing may take a while and needs no Hydra
        from launcher.config.compose import compose_config

        cfg = compose_config(list(overrides))
    samples, stats = preview_config(cfg, n)
    return DataPreview(samples, stats, preview_images(samples, resolve_dataset_dir(cfg.data)))


def preview_images(samples: list, dataset_dir: Path) -> list:
    """[(small PIL image or None, caption Note)] for each image of each sample, read from the raw files."""
    out = []
    for sample in samples:
        for k, name in enumerate(sample.images):
            try:
                image, size = load_preview_image(image_file(dataset_dir, name))
            except (LauncherError, OSError) as exc:
                out.append((None, Note("data_image_missing", index=sample.index, k=k, detail=str(exc))))
                continue
            if k < len(sample.image_tokens):
                note = Note("data_image_caption", index=sample.index, k=k, tokens=sample.image_tokens[k], size=size)
            else:
                note = Note("data_image_caption_unknown", index=sample.index, k=k, size=size)
            out.append((image, note))
    return out
