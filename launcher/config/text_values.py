"""Every string of the config is one line of printable text, checked before anything runs.

Names, accounts, partitions, QoS values and paths end up in the sbatch script, in ``#SBATCH`` lines, in
printed commands and in file names. A newline in ``cluster.qos`` would end its ``#SBATCH`` line and start a
shell line that runs when the job starts (and sbatch stops reading directives there, dropping --requeue,
--signal and --time); a NUL or an escape sequence in a path is never what was meant. ``text_problems(cfg)``
returns one line per string holding a control character, naming the key, as ``range_problems`` does for
numbers. Quoting (``launcher.slurm.render.shell_word``) then keeps ``$(...)``, backticks, quotes and ``;``
plain text.
"""
from __future__ import annotations

import dataclasses
import re
import unicodedata
from typing import TYPE_CHECKING, Any, Iterator, Optional

if TYPE_CHECKING:
    from launcher.config.schema import Config

DATA_ONLY = ("model.config", "parallelism.deepspeed")
"""Dicts handed to transformers / DeepSpeed as data, never to a shell or a file name: not checked."""

TAB_ALLOWED = ("cluster.setup",)
"""Shell lines written into the script as they are: a tab there is indentation."""

SBATCH_OPTION = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
"""What a key of cluster.sbatch_extra may look like (submitit writes the key into ``#SBATCH --KEY=...`` as is)."""

NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL byte", "\x1b": "an escape"}


def control_character(text: str, allow_tab: bool = False) -> Optional[tuple]:
    """(position, description) of the first control character (Unicode category Cc, and the line and
    paragraph separators U+2028/U+2029) in ``text``, or None."""
    for i, ch in enumerate(text):
        if ch == "\t" and allow_tab:
            continue
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            return i, NAMES.get(ch, f"U+{ord(ch):04X}")
    return None


def _strings(value: Any, key: str) -> Iterator[tuple]:
    """(key, text, is_a_dict_key) for every string inside a config value, keys named as a user writes them."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            sub = f"{key}.{f.name}" if key else f.name
            if sub not in DATA_ONLY:
                yield from _strings(getattr(value, f.name), sub)
    elif isinstance(value, str):
        yield key, value, False
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _strings(item, f"{key}[{i}]")
    elif isinstance(value, dict):
        for k, item in value.items():
            if isinstance(k, str):
                yield f"{key}.{k}", k, True
            yield from _strings(item, f"{key}.{k}")


def text_problems(cfg: "Config") -> list[str]:
    """One line per string with a control character, per cluster.env name that is not a variable name and
    per cluster.sbatch_extra key that is not an option name."""
    problems = []
    for key, text, is_key in _strings(cfg, ""):
        found = control_character(text, allow_tab=key.startswith(TAB_ALLOWED) and not is_key)
        if found is not None:
            where, what = found
            problems.append(
                f"{key}: {'the name' if is_key else 'the value'} {text!r} holds {what} (character {where + 1});"
                " names, accounts, partitions, QoS values, paths and the job's settings must be one line of"
                " printable text")
    for name in cfg.cluster.env:
        if not str(name).isidentifier():
            problems.append(f"cluster.env.{name}: not a valid environment variable name (letters, digits and _,"
                            " not starting with a digit)")
    for option in cfg.cluster.sbatch_extra:
        if not SBATCH_OPTION.fullmatch(str(option).lstrip("-")):
            problems.append(f"cluster.sbatch_extra.{option}: not an sbatch option name (letters, digits, - and _,"
                            " e.g. mail-type)")
    return problems
