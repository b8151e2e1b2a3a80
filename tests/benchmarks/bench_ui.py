"""How fast ``launcher ui`` starts, and how fast its page shows 200 runs.

    PYTHONPATH=. python tests/benchmarks/bench_ui.py [--runs 200] [--steps 500] [--repeat 3]

1. Start-up: ``python -m launcher ui --root EMPTY`` until its page answers HTTP 200 (process start included).
2. 200 runs: a temp root with RUNS run dirs written the way ``launcher train`` writes them (config.yaml from
   compose_config + write_run_config, metrics.jsonl with STEPS train lines and an eval line every 50, half of
   them with summary.json, a tenth with slurm_job.json); then
   - the scan alone (``launcher.ui.runs.scan``, what every refresh does), in this process;
   - in headless Chromium (/usr/bin/chromium): open the page, click the Runs tab, until the table says
     "RUNS run(s)", and until the first run's loss curve is drawn.
Job ids in slurm_job.json are made up (9000000+): squeue/sacct are asked about them like any other.
3. Submit -> first training point: in Chromium, the default form (the tiny model and data of conf/train.yaml)
   with max steps 20 and log every 1, Submit, the Runs tab on the new run, until its plot draws a training-loss
   point (a detached local run: process start, imports, model and data load, the first step, the 2 s refresh).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS, free_port, start_ui, wait_for_page  # noqa: E402


def make_runs(root: Path, runs: int, steps: int) -> None:
    from launcher.config.compose import compose_config
    from launcher.launch.rundir import make_run_dir, write_run_config

    cfg = compose_config([f"run.output_root={root}", f"train.max_steps={steps}"])
    for i in range(runs):
        run_dir = make_run_dir(root, f"bench-{i:03d}")
        write_run_config(run_dir, cfg)
        done = i % 2 == 0
        last = steps if done else steps // 2
        with open(run_dir / "metrics.jsonl", "w") as fh:
            for step in range(1, last + 1):
                fh.write(json.dumps({"kind": "train", "step": step, "epoch": step / steps, "loss": 4.0 / (1 + step / 50),
                                     "lr": 1e-4, "grad_norm": 1.0, "tokens_per_s": 5000.0}) + "\n")
                if step % 50 == 0:
                    fh.write(json.dumps({"kind": "eval", "step": step, "eval_loss": 4.2 / (1 + step / 50)}) + "\n")
        if done:
            (run_dir / "summary.json").write_text(json.dumps({"total_steps": steps, "final_step": steps,
                                                              "final_train_loss": 4.0 / (1 + steps / 50)}))
        if i % 10 == 0:
            (run_dir / "slurm_job.json").write_text(json.dumps({"job_id": str(9_000_000 + i)}))


def page_times(url: str, runs: int) -> tuple:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        start = time.perf_counter()
        page.goto(url)
        page.get_by_role("tab", name="Runs").click()
        expect(page.locator("#runs-summary")).to_contain_text(f"{runs} run(s)", timeout=300_000)
        table_s = time.perf_counter() - start
        expect(page.locator("#loss-plot path[aria-roledescription='line mark']").first).to_be_visible(timeout=300_000)
        curve_s = time.perf_counter() - start
        browser.close()
    return table_s, curve_s


def submit_to_first_point(url: str, root: Path) -> tuple:
    """(seconds from the Submit click to the first training-loss point on the Runs tab's plot, to the run's end)."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#group-method")
        for elem, value in (("field-train-max_steps", "20"), ("field-train-log_every", "1"), ("run-name", "bench-submit")):
            box = page.locator(f"#{elem} input, #{elem} textarea").first
            box.fill(value)
            box.dispatch_event("input")
        start = time.perf_counter()
        page.locator("#submit-btn").click()
        expect(page.locator("#compose-status textarea")).to_have_value(re.compile("started locally"), timeout=300_000)
        rel = str(next(root.glob("bench-submit/*/*/config.yaml")).parent.relative_to(root))
        page.get_by_role("tab", name="Runs").click()
        page.locator("#run-select input").click()
        page.locator(f"#run-select [role=option][aria-label='{rel}']").click()
        train = page.locator("#loss-plot path[aria-roledescription='point'][aria-label*='series: train']")
        expect(train.first).to_be_attached(timeout=600_000)
        first_s = time.perf_counter() - start
        expect(page.locator("#run-progress-bar")).to_have_attribute("data-phase", "finished", timeout=600_000)
        done_s = time.perf_counter() - start
        browser.close()
    return first_s, done_s


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=500, help="train lines per finished run's metrics.jsonl")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: apt-get install -y chromium")
        return 1
    from launcher.ui.runs import scan

    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        tmp = Path(tmp)
        empty, root = tmp / "empty", tmp / "runs"
        starts = []
        for _ in range(args.repeat):
            port = free_port()
            proc = start_ui(empty, port, tmp / "server.log")
            try:
                starts.append(wait_for_page(f"http://127.0.0.1:{port}/", proc, tmp / "server.log"))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        print(f"start-up to a served page: median {statistics.median(starts):.2f} s"
              f" (runs: {', '.join(f'{s:.2f}' for s in starts)})")

        t0 = time.perf_counter()
        make_runs(root, args.runs, args.steps)
        print(f"wrote {args.runs} run dirs in {time.perf_counter() - t0:.1f} s")
        scans = []
        for _ in range(args.repeat + 1):
            t0 = time.perf_counter()
            infos = scan(root)
            scans.append(time.perf_counter() - t0)
        assert len(infos) == args.runs
        print(f"scan of {args.runs} run dirs: first (cold: every config.yaml parsed) {scans[0]:.3f} s, then (every"
              f" refresh; only what changed is re-read) median {statistics.median(scans[1:] or scans):.3f} s")

        port = free_port()
        proc = start_ui(root, port, tmp / "server.log")
        try:
            wait_for_page(f"http://127.0.0.1:{port}/", proc, tmp / "server.log")
            results = [page_times(f"http://127.0.0.1:{port}/", args.runs) for _ in range(args.repeat)]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        tables, curves = zip(*results)
        print(f"page open -> Runs tab lists {args.runs} runs: median {statistics.median(tables):.2f} s"
              f" (runs: {', '.join(f'{s:.2f}' for s in tables)})")
        print(f"page open -> first run's loss curve drawn: median {statistics.median(curves):.2f} s")

        fresh = tmp / "submit"
        port = free_port()
        proc = start_ui(fresh, port, tmp / "server.log")
        try:
            wait_for_page(f"http://127.0.0.1:{port}/", proc, tmp / "server.log")
            first_s, done_s = submit_to_first_point(f"http://127.0.0.1:{port}/", fresh)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print(f"Submit -> first training point on the plot: {first_s:.1f} s (run finished, 20 steps: {done_s:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
