"""Whole-file checks before a job is queued: every row parsed and formatted, none tokenized.

The same reader and formatter as the training build (``readers.read_spec_items``, ``formats.row_to_sample``),
so a row that passes here fails later only on what needs the tokenizer (a row cut to no trained token by
cutoff_len). Streams the file: a million rows cost seconds and the memory of one row at a time (a JSON list:
its parsed objects, once).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from launcher.errors import DataError
from launcher.data.formats import row_to_sample
from launcher.data.readers import parse_json_line, read_spec_items
from launcher.data.registry import DatasetSpec

SHOWN_ERRORS = 5


@dataclass
class DatasetCheck:
    rows: int = 0
    """Rows read (bad ones included)."""
    bad: int = 0
    errors: list = field(default_factory=list)
    """The first ``SHOWN_ERRORS`` bad rows' messages (file:line: what is wrong and what to do)."""

    def summary(self, name: str) -> str:
        """One line (the first error, and how many more) for a report."""
        if not self.errors:
            return f"dataset '{name}': {self.rows} rows, all valid"
        more = f" (and {self.bad - 1} more bad row(s); next: {'; '.join(self.errors[1:])})" if self.bad > 1 else ""
        return f"dataset '{name}': {self.errors[0]}{more}"


def check_dataset(spec: DatasetSpec, max_errors: int = SHOWN_ERRORS,
                  media: Optional[Callable[[dict, str], None]] = None) -> DatasetCheck:
    """Read every row of a local dataset and format it; count bad rows, keep the first messages.
    ``media(sample, where)`` checks a formatted row's images (preflight.media_checker), raising DataError.

    A file error (missing, not UTF-8, a malformed JSON list) stops the check: it is one error for the file.
    An empty file or list is an error too (no row to train on).
    """
    check = DatasetCheck()
    try:
        for where, payload, raw in read_spec_items(spec):
            check.rows += 1
            try:
                sample = row_to_sample(parse_json_line(payload, where) if raw else payload, spec, where)
                if media is not None:
                    media(sample, where)
            except DataError as exc:
                check.bad += 1
                if len(check.errors) < max_errors:
                    check.errors.append(str(exc))
    except DataError as exc:  # the file itself
        check.bad += 1
        check.errors.insert(0, str(exc))
        return check
    if check.rows == 0:
        source = spec.source() if spec.file_name else spec.hf_hub_url
        check.bad += 1
        check.errors.append(f"{source}: no rows (an empty file or list); add rows or remove the dataset")
    return check
