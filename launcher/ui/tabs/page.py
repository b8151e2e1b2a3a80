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

LANG_CHOICES = ("English", "中文")
"""The language switch's options (each in its own language), as ``LANG_CODES`` names them."""
LANG_CODES = {"English": "en", "中文": "zh-CN"}
LANG_STORE = "launcher-ui-lang"
"""The browser's localStorage key that remembers the switch across reloads."""

TABS = ("compose", "runs", "compare", "chat", "evaluate")
"""The tabs' ids (``gr.Tab(id=...)``); each is named by the label ``tab_<id>``."""


def _tab_names() -> str:
    import json

    from launcher.ui.i18n import LABELS, key

    return json.dumps({tab: LABELS[key(f"tab_{tab}")] for tab in TABS}, ensure_ascii=False)


_CHANGE_LOCALE = r"""
async function launcherSetLang(code) {
  // Gradio's own language store (what its settings panel sets): the module that exports changeLocale.
  const url = performance.getEntriesByType("resource").map(e => e.name)
      .find(n => /\/core-[^/]*\.js(\?|$)/.test(n));
  if (url) { try { (await import(url)).changeLocale(code); } catch (e) { console.error(e); } }
  document.documentElement.lang = code;
  // Gradio words a tab's name once its tab has been opened: the others keep the page's first language. Their
  // text node is reworded in place (the node Svelte holds, so its own later updates still land).
  const names = """ + _tab_names() + r""";
  const zh = code.toLowerCase().startsWith('zh');
  for (const button of document.querySelectorAll('button[role=tab][data-tab-id]')) {
    const name = names[button.dataset.tabId];
    const node = name && [...button.childNodes].find(c => c.nodeType === 3 && c.nodeValue.trim());
    if (node) { node.nodeValue = name[zh ? 1 : 0]; }
  }
}
"""


@dataclass
class Page:
    root: Path
    """The output root the UI lists and submits to (resolved)."""
    lang_box: gr.Textbox
    """Hidden; each event writes the page's language into it before its handler runs."""
    allowed: "UiRoots"
    """The folders a handler may open files under (``launcher.ui.roots``): checked before any file is opened."""

    def on(self, trigger, fn, inputs, outputs, trigger_mode=None, **kwargs):
        """``trigger(fn, inputs + [page language], outputs)``: the language is read in the browser first.
        ``trigger_mode="always_last"``: an event that fires while the last one runs is not dropped (a second
        run picked in Compare while the first one's curves load)."""
        extra = {"trigger_mode": trigger_mode} if trigger_mode else {}
        return trigger(None, None, [self.lang_box], js=LANG_JS, queue=False, show_progress="hidden", **extra).then(
            fn, list(inputs) + [self.lang_box], outputs, **kwargs)

    def run_path(self, rel: Optional[str]) -> Optional[Path]:
        """The run dir a selector names, confined to the root; None unless it holds a run's config."""
        if not rel:
            return None
        path = runs.confine(self.root, rel)
        return path if (path / CONFIG_FILE).is_file() else None


def curve_chart(rows: list, metric: str, lang: str):
    """The chart of ``rows`` (``launcher.ui.plots``) with its axes and series named in the page's language
    (a run's name before a series stays as it is)."""
    from launcher.ui import plots
    from launcher.ui.i18n import message, worded

    if metric == plots.LOSS:
        rewards = any(r["series"].endswith("reward") for r in rows)
        y_title = message("axis_loss_reward", lang) if rewards else message("axis_loss", lang)
    else:
        y_title = worded("metric", metric, lang)
    return plots.chart([dict(r, series=series_word(r["series"], lang)) for r in rows], y_title=y_title,
                       x_title=message("axis_step", lang))


def metric_choices(names: list, lang: str) -> list:
    """A metric picker's choices: (the metric in the page's language, its key) -- the key is what handlers get."""
    from launcher.ui.i18n import worded

    return [(worded("metric", name, lang), name) for name in names]


def series_word(series: str, lang: str) -> str:
    """``[RUN ]train`` -> ``[RUN ]训练`` in Chinese: the loss view's series names (``plots.LOSS_SERIES``)."""
    from launcher.ui import plots
    from launcher.ui.i18n import worded

    for _, name in sorted((p for pairs in plots.LOSS_SERIES.values() for p in pairs), key=lambda p: -len(p[1])):
        if series == name or series.endswith(" " + name):
            return series[: len(series) - len(name)] + worded("series", name, lang)
    return series


def one_line(exc: BaseException) -> str:
    """An exception as the one line a page shows: its first non-empty line, else its type's name (never a
    bare "Error")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def failure(exc: BaseException, lang: str) -> str:
    """``error: <the one-line reason>`` in the page's language."""
    from launcher.ui.i18n import message

    return message("error", lang, detail=one_line(exc))


SWITCH_JS = ("async (choice) => {" + _CHANGE_LOCALE + """
  const code = choice === '中文' ? 'zh-CN' : 'en';
  localStorage.setItem('""" + LANG_STORE + """', code);
  await launcherSetLang(code);
  return choice;
}""")
"""The switch's change: remember the choice, switch Gradio's labels and the page's language."""

RESTORE_JS = ("async () => {" + _CHANGE_LOCALE + """
  const code = localStorage.getItem('""" + LANG_STORE + """');
  if (code) { await launcherSetLang(code); }
  const lang = code || document.documentElement.lang || navigator.language || 'en';
  return lang.toLowerCase().startsWith('zh') ? '中文' : 'English';
}""")
"""On page load: the remembered language (else the browser's) applied, and shown on the switch."""
