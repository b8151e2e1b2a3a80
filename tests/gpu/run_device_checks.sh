#!/usr/bin/env bash
# The GPU checks of issues 15, 16 and 19, run as one script on one lent GPU machine (an H100/H200 with torch,
# transformers, peft and accelerate, and nothing else that launcher needs): the missing packages come as wheels
# in .whl/ (see the closing notes for how they are made). Each check has its own time limit, so one hang does
# not cost the others; everything is logged to $OUT (or ./gpu-out).
#
#   bash tests/gpu/run_device_checks.sh [checks...]     # default: env load bench vl fp16 parallel qlora optimizers seqpar
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 WANDB_MODE=disabled
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
checks=${*:-env load bench vl fp16 parallel qlora optimizers seqpar}
run() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s) $(date +%T)"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  echo "=== $name: rc $rc in $((SECONDS - t0)) s"
}
for c in $checks; do
  case $c in
    env) run env 30 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch, transformers, peft, deepspeed, trl; print(torch.__version__, torch.version.cuda, transformers.__version__, peft.__version__, deepspeed.__version__, trl.__version__); import importlib.util as u; print(\"flash_attn:\", u.find_spec(\"flash_attn\") is not None, \"bitsandbytes:\", u.find_spec(\"bitsandbytes\") is not None)"' ;;
    vl) run vl_bench 90 python3 tests/gpu/gpu_vl_bench.py --max-seconds 40 ;;
    bench) run bench_gpu 110 python3 -m launcher bench experiment=bench_gpu run.output_root=/tmp/gpu-runs --steps 15 ;;
    load) run load_check 230 python3 tests/gpu/gpu_load_check.py --paths plain-bf16,fsdp,zero3 --timeout 75 ;;
    parallel) run parallel_gpu 70 python3 -m pytest -x -q -p no:cacheprovider tests/parallel/test_parallel_gpu.py ;;
    fp16) run fp16_gpu 50 python3 -m pytest -x -q -p no:cacheprovider tests/parallel/test_fp16.py -k "cuda or gpu" ;;
    qlora) run qlora 60 python3 tests/gpu/gpu_qlora_check.py ;;
    optimizers) run optimizers 90 python3 tests/gpu/gpu_optimizers_check.py ;;
    # sequence parallelism with flash-attention varlen (one GPU: a group of one); the per-rank memory bench needs 2 GPUs
    seqpar) run seq_parallel 150 bash -c 'python3 tests/gpu/gpu_seq_parallel_check.py && if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then python3 tests/benchmarks/bench_seq_parallel.py --tokens 32768 --flash; else echo "bench_seq_parallel: needs 2 GPUs"; fi' ;;
  esac
done
