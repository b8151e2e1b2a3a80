"""logger=tensorboard / mlflow / several at once: what a run wrote, read back with the libraries' own readers.

metrics.jsonl is the source of truth; every numeric field of every record must reach each backend at its
step, with the config and the sweep group.
"""
from __future__ import annotations

import json

import pytest

from launcher.cli import main as cli_main
from launcher.config.compose import compose_config
from launcher.config.schema import logger_backends
from launcher.errors import ConfigError

FAST = ["train.max_steps=3", "train.micro_batch_size=4", "train.log_every=1", "data.max_samples=100",
        "train.eval_every=2", "train.eval_max_batches=1", "train.exact_match_samples=0", "method.lr=2e-3"]


def jsonl(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def expected_series(records, key):
    return [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and "step" in r]


def test_logger_choices_compose():
    assert logger_backends(compose_config(["logger=tensorboard"]).logger) == ["tensorboard"]
    assert logger_backends(compose_config(["logger=mlflow"]).logger) == ["mlflow"]
    assert logger_backends(compose_config([]).logger) == []
    assert logger_backends(compose_config(["logger.backends=[wandb,mlflow]"]).logger) == ["wandb", "mlflow"]
    with pytest.raises(ConfigError, match=r"logger.backends\[1\]: 'swanlab' is not one of wandb, tensorboard, mlflow"):
        compose_config(["logger.backends=[tensorboard,swanlab]"])


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trackers")
    code = cli_main(["train", f"run.output_root={root}", "logger.backends=[tensorboard,mlflow]",
                     "logger.group=lr-scan", "logger.project=tracker-test", *FAST, "--name", "tracked"])
    assert code == 0
    (run_dir,) = list(root.glob("tracked/*/*"))
    return run_dir


def test_tensorboard_reads_back_every_metric(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    records = jsonl(tracked_run)
    acc = EventAccumulator(str(tracked_run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    for key in ("loss", "lr", "grad_norm", "eval_loss"):
        want = expected_series(records, key)
        assert want, key
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)
    assert "loss" in scalars
    texts = {t: acc.Tensors(t)[0].tensor_proto.string_val[0].decode() for t in acc.Tags()["tensors"]}
    config = [v for k, v in texts.items() if k.startswith("config")][0]
    assert "micro_batch_size: 4" in config and "lr: 0.002" in config
    assert [v for k, v in texts.items() if k.startswith("group")] == ["lr-scan"]


def test_mlflow_reads_back_metrics_params_and_group(tracked_run):
    from mlflow.tracking import MlflowClient

    records = jsonl(tracked_run)
    client = MlflowClient(tracking_uri=(tracked_run / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tracker-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == (tracked_run / "mlflow_run_id").read_text()
    assert run.info.status == "FINISHED"
    assert run.data.tags["group"] == "lr-scan"
    assert run.data.params["method.lr"] == "0.002" and run.data.params["train.micro_batch_size"] == "4"
    for key in ("loss", "lr", "eval_loss"):
        history = client.get_metric_history(run.info.run_id, key)
        want = expected_series(records, key)
        got = sorted((m.step, m.value) for m in history)
        assert [s for s, _ in got] == [s for s, _ in sorted(want)]
        assert [v for _, v in got] == pytest.approx([v for _, v in sorted(want)])
