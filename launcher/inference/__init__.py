"""After training: generation, predict (ROUGE/BLEU), chat, and a run's model read back (``trained``: final, at a
checkpoint, or its base) for them, for serve, the UI and export (launcher.export)."""
