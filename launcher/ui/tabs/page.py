"""What every tab's handlers share: the run root, the page's language, and the loss-curve frame."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import gradio as gr

from launcher.paths import CONFIG_FILE
from launcher.ui import runs

if TYPE_CHECKING:
    from launcher.ui.roots import UiRoots

LANG_JS = "() => document.documentElement.lang || navigator.language || 'en'"
"""The page's language as Gradio's language switch (or the browser) set it: svelte-i18n writes it to <html lang>."""


@dataclass
class Page:
    root: Path
    """The output root the UI lists and submits to (resolved)."""
    lang_box: gr.Textbox
    """Hidden; each event writes the page's language into it before its handler runs."""
    allowed: "UiRoots"
    """The folders a handler may open files under (``launcher.ui.roots``): checked before any file is opened."""

    def on(self, trigger, fn, inputs, outputs, **kwargs):
        """``trigger(fn, inputs + [page language], outputs)``: the language is read in the browser first."""
        return trigger(None, None, [self.lang_box], js=LANG_JS, queue=False, show_progress="hidden").then(
            fn, list(inputs) + [self.lang_box], outputs, **kwargs)

    def run_path(self, rel: Optional[str]) -> Optional[Path]:
        """The run dir a selector names, confined to the root; None unless it holds a run's config."""
        if not rel:
            return None
        path = runs.confine(self.root, rel)
        return path if (path / CONFIG_FILE).is_file() else None


def plot_frame(rows: list):
    """Curve points as a typed frame; None when there are none (a plot that starts from an empty frame draws
    no lines for later values: Gradio 6 fixes the colour domain at the first value)."""
    if not rows:
        return None
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["step", "loss", "series"])
    return frame.astype({"step": "int64", "loss": "float64", "series": "string"})
