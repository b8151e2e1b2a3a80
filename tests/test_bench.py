"""``launcher bench``: what it reports is measured, and adds up; start-up pieces behave."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest
import torch

from launcher.cli import main as cli_main
from launcher.config.compose import compose_config
from launcher.models.build import build_base_model
from launcher.models.tokenizers import load_tokenizer


def test_bench_reports_consistent_figures(output_root, capsys):
    out = output_root / "bench.json"
    rc = cli_main(["bench", f"run.output_root={output_root}", "data.max_samples=200", "data.packing=true", "data.cutoff_len=256",
                   "train.micro_batch_size=4",
                   "--steps", "4", "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "non_pad_tokens_per_s" in printed and "  tokenizer" in printed

    assert report["steps"] == 4 and report["steady_steps"] == 3
    assert report["data"] == "tasks"  # the dataset that trained
    assert (report["attention"], report["compute_dtype"]) == ("sdpa", "float32")
    # Non-pad tokens include the prompt tokens that are not trained.
    assert 0 < report["trained_tokens_per_s"] < report["non_pad_tokens_per_s"]
    assert 0 < report["packing_fill"] <= 1
    assert report["peak_rss_gb"] > 0.1
    assert report["model_tflops_per_s"] > 0
    # Only training is measured: the held-out split data=tasks has is not scored before, during or after.
    records = [json.loads(line) for line in open(f"{report['run_dir']}/metrics.jsonl")]
    assert {r["kind"] for r in records} == {"train"}
    # The start-up phases are consecutive: they add up to the time from the process start to the first step.
    phases = report["startup_seconds"]
    assert set(phases) >= {"before_setup", "tokenizer", "data", "model", "engine", "after_setup"}
    assert all(v >= 0 for v in phases.values())
    assert math.isclose(sum(phases.values()), report["time_to_first_step_s"], abs_tol=0.02)
    # The pytest process started long before this command: "before setup" counts from the process start.
    assert phases["before_setup"] > 1.0


def test_bench_report_names_the_dataset_that_trained(output_root):
    """DPO on dpo_en_demo over experiment=bench_reference keeps data=alpaca_demo's group name; bench.json names
    the dataset that trained (it said alpaca-demo)."""
    from launcher.launch.bench import bench_report
    from launcher.launch.rundir import make_run_dir, write_run_config

    cfg = compose_config(["experiment=bench_reference", "method=dpo_lora", "data.datasets=[dpo_en_demo]",
                          "data.cutoff_len=1024"])
    run_dir = make_run_dir(output_root, "bench-dpo")
    write_run_config(run_dir, cfg)
    report = bench_report({}, run_dir)
    assert report["data"] == "dpo_en_demo" and report["data_group"] == "alpaca-demo"
    assert report["method"] == "dpo" and report["cutoff_len"] == 1024


def test_process_start_time_is_when_the_command_started():
    """Not psutil's create_time(), which reads up to a second early (boot time in whole seconds)."""
    before = time.time()
    child = subprocess.run([sys.executable, "-c", "from launcher.training.process_stats import process_start_time;"
                            " print(repr(process_start_time()))"], capture_output=True, text=True, check=True)
    after = time.time()
    started = float(child.stdout)
    # 10 ms clock ticks, and the fork happens after `before` was read.
    assert before - 0.02 <= started <= after


def test_random_init_draws_each_weight_once_and_ties():
    cfg = compose_config(["model=tiny_qwen2_qwentok"])
    tokenizer = load_tokenizer(cfg.model)
    model = build_base_model(cfg, tokenizer, "sdpa", torch.float32)
    again = build_base_model(cfg, tokenizer, "sdpa", torch.float32)
    embed = model.model.embed_tokens.weight
    assert model.lm_head.weight is embed
    std = model.config.initializer_range
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), name
        if name.endswith("norm.weight"):
            assert torch.equal(param, torch.ones_like(param)), name
        elif name.endswith(".bias"):
            assert not param.any(), name
        else:
            assert abs(param.std().item() - std) < 0.1 * std, name
        torch.testing.assert_close(param, again.get_parameter(name), rtol=0, atol=0)  # same seed, same weights
    assert not embed[tokenizer.pad_token_id].any()
    rotary = model.model.rotary_emb
    dim = model.config.hidden_size // model.config.num_attention_heads
    theta = model.config.rope_parameters["rope_theta"]
    expected = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    torch.testing.assert_close(rotary.inv_freq, expected)
    ids = torch.randint(0, len(tokenizer), (2, 32))
    loss = model(input_ids=ids, labels=ids).loss.item()
    assert abs(loss - math.log(len(tokenizer))) < 0.3  # an untrained model is near uniform


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bench_reports_mfu(output_root):
    """The GPU case runs as configured (bf16, FlashAttention-2 where installed) and reports MFU. How high the
    MFU is, is the benchmark's figure, not a test's."""
    out = output_root / "bench.json"
    assert cli_main(["bench", "experiment=bench_gpu", f"run.output_root={output_root}", "--steps", "4",
                     "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert 0 < report["mfu"] < 1 and report["compute_dtype"] == "bfloat16"
    assert report["cuda_max_allocated_gb"] > 10  # 1.5B parameters, fp32 master weights and AdamW states


def test_gpu_peak_by_device_name():
    from launcher.training.flops import gpu_peak_flops

    assert gpu_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu_peak_flops("NVIDIA H100 PCIe") == 756e12  # not the SXM part's peak
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_peak_flops("NVIDIA GeForce GTX 1080") is None  # unknown: no MFU rather than a wrong one
