"""Models and tokenizers: what a config names (a hub id, a folder, or a random-init architecture), built or
loaded; and a finished run's model read back for the after-training tools."""
