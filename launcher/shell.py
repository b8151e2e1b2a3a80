"""Shell text: the one quoting rule for every value that reaches a script or a printed command.

The sbatch script, the per-node torchrun command (printed by ``--dry-run`` and kept as command.txt), the
local command and the ``launcher train ...`` line the UI and the LLaMA-Factory translation print all quote
with ``shell_word``. submitit writes the ``#SBATCH`` values with ``shlex.quote``, which is the same rule.
Control characters never get this far: the schema refuses them (``launcher.config.text_values``).
"""
from __future__ import annotations

import re
import shlex


def placeholder(name: str) -> str:
    """A value known only on the node (``HEAD_ADDR``, ``SLURM_JOB_ID``) inside a command that is printed, not
    run: ``shell_word`` writes it as ``"$NAME"``. The marker holds NUL bytes, which the schema refuses in every
    config value (launcher.config.text_values), so no user text can pass for one."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"placeholder: {name!r} is not a shell variable name")
    return f"\0{name}\0"


_PLACEHOLDER = re.compile(r"\0([A-Za-z_][A-Za-z0-9_]*)\0")


def shell_word(text: str) -> str:
    """``text`` as one shell word, the one quoting rule for every value that reaches the sbatch script or a
    printed command: ``shlex.quote`` (single quotes, so ``$(...)``, backticks, quotes and ``;`` stay text), and
    each ``placeholder(NAME)`` inside it as ``"$NAME"``, which the shell that runs the command expands.
    ``shlex.split`` of the result gives ``text`` back, placeholders written ``$NAME``."""
    text = str(text)
    pieces = _PLACEHOLDER.split(text)
    if len(pieces) == 1:
        return shlex.quote(text)
    # split() alternates literal text and placeholder names: "a", "HEAD_ADDR", ":", "PORT", ""
    return "".join(f'"${piece}"' if i % 2 else (shlex.quote(piece) if piece else "")
                   for i, piece in enumerate(pieces))


def unplaceholder(text: str) -> str:
    """``text`` with each placeholder written ``$NAME``: what ``shlex.split`` of ``shell_word(text)`` gives."""
    return _PLACEHOLDER.sub(lambda m: f"${m.group(1)}", str(text))


def shell_command(words) -> str:
    """argv as one line of shell text (``shell_word`` each)."""
    return " ".join(shell_word(w) for w in words)
