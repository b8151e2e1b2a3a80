"""Engines: the one place that knows about process groups, sharding, precision and model placement.

``base`` holds what every engine shares (the precision policy, the model-build path, the optimizer step, the
final save); ``ddp``, ``deepspeed`` and ``fsdp`` each state their strategy; ``distributed`` sets up the process
group. ``build_engine`` (in ``base``) picks one from ``cfg.parallelism``.
"""
