"""File modes for folders we hand to users: what their umask allows, as for any file they create.

safetensors (0.8) writes every ``.safetensors`` file 0600 (through a private temporary file), so a model
folder saved with ``save_pretrained`` is unreadable by the group and others even where the umask (022, 002)
says it should be readable: a shared project directory on a cluster then holds a model only its writer can load.
"""
from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(directory: Path) -> None:
    """Give every file under ``directory`` the mode a new file gets here (0666 & ~umask), folders 0777 & ~umask."""
    mask = current_umask()
    directory = Path(directory)
    for path in [directory, *directory.rglob("*")]:
        if path.is_symlink():
            continue
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
