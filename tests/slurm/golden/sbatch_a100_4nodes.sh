#!/bin/bash

# Parameters
#SBATCH --account=proj42
#SBATCH --chdir=/shared/runs/tiny-qwen2-sft_full-tasks/2026-01-01/00-00-00/code
#SBATCH --comment=launcher:/shared/runs/tiny-qwen2-sft_full-tasks/2026-01-01/00-00-00
#SBATCH --constraint=a100-80gb
#SBATCH --cpus-per-task=64
#SBATCH --error=/shared/runs/tiny-qwen2-sft_full-tasks/2026-01-01/00-00-00/slurm/%j_0_log.err
#SBATCH --exclusive
#SBATCH --gpus-per-node=8
#SBATCH --job-name=tiny-qwen2-sft_full-tasks
#SBATCH --mail-type=END
#SBATCH --mem=480GB
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=/shared/runs/tiny-qwen2-sft_full-tasks/2026-01-01/00-00-00/slurm/%j_0_log.out
#SBATCH --partition=gpu
#SBATCH --qos=high
#SBATCH --requeue
#SBATCH --reservation=llm
#SBATCH --signal=USR2@120
#SBATCH --time=1440
#SBATCH --wckey=submitit

# setup
module load cuda/12.4
source /opt/venv/bin/activate
export PYTHONPATH=/shared/runs/tiny-qwen2-sft_full-tasks/2026-01-01/00-00-00/code${PYTHONPATH:+:$PYTHONPATH}
export OMP_NUM_THREADS=8
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /shared/runs/tiny-qwen2-sft_full-tasks/2026-01-01/00-00-00/slurm/%j_%t_log.out --error /shared/runs/tiny-qwen2-sft_full-tasks/2026-01-01/00-00-00/slurm/%j_%t_log.err /opt/venv/bin/python -u -m submitit.core._submit /shared/runs/tiny-qwen2-sft_full-tasks/2026-01-01/00-00-00/slurm
