"""Engines: the one place that knows about process groups, sharding, precision and model placement.

``base`` holds what every engine shares (the model-build path, the optimizer step, the final save) and
``build_engine``, which picks one from ``cfg.parallelism``; ``precision`` is the precision policy, ``optim`` the
optimizer and schedule; ``ddp``, ``deepspeed`` and ``fsdp`` each state their strategy; ``distributed`` sets up
the process group.
"""
