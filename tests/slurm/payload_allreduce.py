"""A trivial rank payload for cluster tests that do not need training: one gloo all_reduce.

Run as ``python -m tests.slurm.payload_allreduce --run-dir RUN_DIR [--sleep S]``; rank 0 writes
RUN_DIR/allreduce.json with the world size and the sum of ranks.
"""
import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

parser = argparse.ArgumentParser()
parser.add_argument("--run-dir", required=True)
args = parser.parse_args()
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
value = torch.tensor([float(rank)])
dist.all_reduce(value)
sleep_s = float(os.environ.get("PAYLOAD_SLEEP_S", "0"))
print(f"rank {rank}/{world} on {os.environ.get('SLURMD_NODENAME')}: sum of ranks {value.item()}", flush=True)
if sleep_s:
    time.sleep(sleep_s)
if rank == 0:
    Path(args.run_dir, "allreduce.json").write_text(json.dumps({"world": world, "sum": value.item()}))
dist.barrier()
dist.destroy_process_group()
