"""Which environment variables hold secrets: they reach jobs only through the environment, never a file.

The launcher refuses a secret in ``cluster.env`` (it would be written to config.yaml and the sbatch script)
and tells the user to export it in the shell instead: sbatch passes the submitting environment to the job,
and a local run's ranks inherit it. The same names are masked wherever the UI shows text.
"""
from __future__ import annotations

import os
import re
from typing import Mapping, Optional

SECRET_ENV_VARS = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
"""The secrets the launcher's own code reads (W&B, the Hugging Face hub)."""

SECRET_NAME = re.compile(r"(^|_)(KEY|TOKEN)$|SECRET|PASSWORD|PASSWD", re.IGNORECASE)
"""Any other name that looks like a secret: *_KEY, *_TOKEN, *SECRET*, *PASSWORD* (OPENAI_API_KEY,
HUGGINGFACE_TOKEN, AWS_SECRET_ACCESS_KEY, DB_PASSWORD)."""

MIN_SECRET_LENGTH = 8
"""Values of secret-looking variables shorter than this are not searched for in text (too many false hits)."""


def is_secret_name(name: str) -> bool:
    return str(name).upper() in SECRET_ENV_VARS or bool(SECRET_NAME.search(str(name)))


def secret_values(environ: Optional[Mapping] = None) -> dict:
    """{value: NAME} of the secret-looking variables of ``environ`` (this process's by default)."""
    environ = os.environ if environ is None else environ
    found = {}
    for name, value in environ.items():
        if is_secret_name(name) and value and len(value) >= (4 if name in SECRET_ENV_VARS else MIN_SECRET_LENGTH):
            found[value] = name
    return found


ASSIGNMENT = re.compile(r"(?<![A-Za-z0-9_])([A-Za-z_][A-Za-z0-9_]*)=(?![\"']?\$)")
"""NAME=value, but not NAME=$OTHER / NAME="$OTHER" (a reference to the environment writes no secret)."""


def secret_assignments(text: str) -> list:
    """Names that look like secrets and are given a value in ``text`` (``export OPENAI_API_KEY=sk-...``)."""
    return [name for name in ASSIGNMENT.findall(str(text)) if is_secret_name(name)]
