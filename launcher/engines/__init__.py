"""Engines: the one place that knows about process groups, sharding, precision and model placement.

``model_build`` builds the model for the run's parallelism (the plain, meta-device and ZeRO-3 paths, LoRA on
top); ``base`` holds what every engine shares (the optimizer step, the final save) and ``build_engine``, which
picks one from ``cfg.parallelism``; ``ddp``, ``deepspeed`` and ``fsdp`` each state their strategy;
``checkpoint`` writes and checks the checkpoints they fill (``checkpoint_layout``: the names of its files);
``precision`` is the precision policy, ``optim`` the optimizer and schedule; ``distributed`` sets up the process
group.
"""
