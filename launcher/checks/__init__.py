"""Every check a run passes before anything is written or queued; ``launcher.checks.preflight.run_preflight``
runs them all, and its docstring says which module owns which kind of check."""
