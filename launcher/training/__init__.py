"""The training library the recipes stand on: the step loop (``trainer``), one ``Objective`` per method
(``objectives``), losses, optimizer and schedule, the data plan, preemption, metrics and the rank entry point
(``entry``); checkpoints are written by the engines (launcher.engines.checkpoint)."""
