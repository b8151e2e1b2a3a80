"""SLURM: what the cluster sees, and the thin shells around submitit and scontrol.

One launch pattern only: one SLURM task per node, each running one ``torchrun`` that starts
``cluster.nproc_per_node`` ranks; the torchruns meet through a c10d rendezvous on the job's first node,
at a port derived from the job id.

- ``render``: pure functions: sbatch parameters and script, the per-node torchrun command, the port.
- ``head_node``: the head node's address from SLURM_JOB_NODELIST and ``scontrol show node``.
- ``node``: what runs in each SLURM task (resolve head and port, run torchrun, keep per-rank logs).
- ``submit``: ``submit_run`` (through submitit) and ``render_plan`` (for --dry-run).
- ``jobs``: ``launcher status|logs|cancel`` for a run dir or a job id.
"""
