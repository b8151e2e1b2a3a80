"""The folders the web UI may open: its data folders, the output root and its upload folder.

Every path a handler opens is resolved (symlinks and ``..`` followed) and checked against these roots before
it is opened: the dataset dir the form names, every file its ``dataset_info.json`` points at (a file uploaded
through the page may name ``/home/someone/notes.json`` or ``../../etc/...``), the data cache, the output
root, a checkpoint to resume from, and an uploaded chat image. Models (``model.name_or_path``) are not
confined: they are loaded, never shown.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

from launcher.errors import ConfigError, LauncherError


@dataclass(frozen=True)
class UiRoots:
    folders: tuple
    """Resolved folders; a path is allowed when it is one of them or below one."""

    @classmethod
    def of(cls, folders: Iterable) -> "UiRoots":
        return cls(tuple(dict.fromkeys(Path(f).expanduser().resolve() for f in folders)))

    def allows(self, path: Path) -> bool:
        path = Path(path).resolve()
        return any(path == root or root in path.parents for root in self.folders)

    def check(self, path, what: str) -> Path:
        """``path`` resolved, or the one refusal message naming ``what`` (a config key or the file's role)."""
        resolved = Path(path).expanduser().resolve()
        if not self.allows(resolved):
            raise ConfigError(
                f"{what}: {resolved} is outside the folders this UI may open ({', '.join(map(str, self.folders))});"
                " start launcher ui with --data-root DIR to add a data folder")
        return resolved


def conf_dataset_dirs(conf_dir: Optional[Path] = None) -> list:
    """The dataset dirs the data groups of conf/data name (the data the UI offers), resolved as runs do."""
    import yaml

    from launcher.config.compose import conf_dir as default_conf_dir
    from launcher.paths import REPO_ROOT

    def found(node) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "dataset_dir" and isinstance(value, str):
                    yield value
                else:
                    yield from found(value)

    dirs = [REPO_ROOT / "data"]
    for path in sorted(Path(conf_dir or default_conf_dir(), "data").glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        for d in map(resolve_env, found(data)):
            dirs.append(Path(d) if Path(d).is_absolute() else REPO_ROOT / d)
    return dirs


def resolve_env(value: str) -> str:
    """A conf value with ``${oc.env:VAR,default}`` in it as a run resolves it (LF's demo data folder is
    ``${oc.env:LLAMAFACTORY_DATA,data/llamafactory}``); anything else unchanged."""
    if "${" not in value:
        return value
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return str(OmegaConf.create({"v": value}).v)
    except OmegaConfBaseException:  # another interpolation: not a folder the page can know
        return value


def upload_folder() -> Path:
    """Where Gradio keeps uploaded files (GRADIO_TEMP_DIR, which ``launcher ui`` sets to a private folder)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


def default_roots(output_root: Path, data_roots: Sequence = ()) -> UiRoots:
    return UiRoots.of([*conf_dataset_dirs(), *data_roots, output_root, upload_folder()])


def config_paths(cfg, data_only: bool = False) -> Iterator[tuple]:
    """(what, path) for every local path a preview, data preview or submit of ``cfg`` opens; ``data_only``:
    the dataset dir and the files it names (what predicting with a finished run's config reads)."""
    from launcher.data import resolve_dataset_dir
    from launcher.data.registry import load_registry

    dataset_dir = resolve_dataset_dir(cfg.data)
    yield "data.dataset_dir", dataset_dir
    if not data_only:
        if cfg.data.cache_dir:
            yield "data.cache_dir", Path(cfg.data.cache_dir)
        yield "run.output_root", Path(cfg.run.output_root)
        if cfg.run.resume not in ("auto", "never"):
            yield "run.resume", Path(cfg.run.resume)
    try:
        specs = load_registry(dataset_dir)
    except (LauncherError, OSError):
        return  # no registry: nothing it names is opened (the preflight says why)
    names = [getattr(e, "name", e) for e in [*cfg.data.datasets, *cfg.data.eval_datasets]]
    for name in dict.fromkeys(names):
        try:
            spec = specs[name]
        except (KeyError, LauncherError):
            continue
        if spec.file_name:
            where = f"{dataset_dir / 'dataset_info.json'}: dataset '{name}', file_name"
            yield where, spec.source()
            if spec.folder:
                yield f"{where} + folder", spec.source() / spec.folder


def check_config(cfg, roots: UiRoots, data_only: bool = False) -> None:
    """ConfigError (the one refusal) for the first path of ``cfg`` outside ``roots``; the dataset dir is checked
    before its dataset_info.json is read."""
    for what, path in config_paths(cfg, data_only):
        roots.check(path, what)


def check_overrides(overrides: Sequence[str], roots: UiRoots) -> None:
    """Every point of the form's overrides (a sweep has several) checked before a handler opens anything.
    Overrides that do not compose are left to the handler, which reports them as the CLI does."""
    from launcher.config.compose import compose_config
    from launcher.sweep.expand import expand_grid
    from launcher.ui.actions import HYDRA_LOCK

    try:
        with HYDRA_LOCK:
            points = expand_grid(list(overrides)).points
            cfgs = [compose_config(p, check=False) for p in points]
    except LauncherError:
        return
    for cfg in cfgs:
        check_config(cfg, roots)
