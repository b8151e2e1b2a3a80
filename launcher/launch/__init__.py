"""Launching a run: ``plan.plan_run`` (compose, validate, preflight, what would run: the dry run) and
``run.launch_run`` (run dir, code snapshot, then torchrun here, a detached local job, SLURM, or a sweep's job
arrays). ``launcher train``, ``launcher bench`` and the UI's Preview and Submit call these two and nothing else.

Modules: ``rundir`` (run dirs and what they hold), ``local`` (torchrun on this host), ``detached`` (a local
job outliving whoever started it), ``slurm_submit`` (sbatch through submitit), ``sweep_launch`` (a sweep's
dirs, job arrays and local points), ``bench`` (``launcher bench``)."""
