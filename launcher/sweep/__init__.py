"""Sweeps: ``expand`` a Hydra grid, ``plan`` (compose, check and lay out every point), ``launch`` (one SLURM job
array per resource shape, or local runs), ``report`` (a table and a plot of every point)."""
