"""After training: generation, predict (ROUGE/BLEU), chat, export of a run's model."""
