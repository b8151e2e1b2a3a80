"""Links to a finished run's model where another tool expects it (LLaMA-Factory's ``output_dir``, from
``run.link_model_to``): its follow-up YAMLs point ``adapter_name_or_path`` / ``model_name_or_path`` there,
while our run dirs keep the model one level down (``<date>/<time>/model``)."""
from __future__ import annotations

import os
from pathlib import Path


def link_final_model(model_dir: Path, target: Path) -> list[str]:
    """Link each file (or folder) of ``model_dir`` into ``target`` by a relative symlink; return what was
    skipped, one line each. Symlinks ``target`` already holds that point below it (an earlier run's) are
    replaced; a real file of the same name is left alone and reported."""
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    for entry in target.iterdir():
        if entry.is_symlink() and not os.path.isabs(os.readlink(entry)) \
                and root in Path(os.path.normpath(target / os.readlink(entry))).resolve().parents:
            entry.unlink()
    skipped = []
    for item in sorted(model_dir.iterdir()):
        link = target / item.name
        if link.exists() or link.is_symlink():
            skipped.append(f"{link} exists and is not a link this launcher made; left as it is")
            continue
        link.symlink_to(os.path.relpath(item.resolve(), root))
    return skipped
