"""``launcher predict RUN_DIR [OVERRIDES...]``: generate on a dataset's prompts and score ROUGE/BLEU.

The run's resolved config is the starting point; ``key=value`` overrides change it for this prediction only
(``data.eval_datasets=[alpaca_zh_demo]``, ``data.max_samples=50``). The work itself is
``launcher.inference.predict.run_predict``, which a SLURM job can run from the ``request.yaml`` written beside the output.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from launcher.config.schema import Config, config_to_dict, load_run_config, parse_config
from launcher.errors import ConfigError


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """``a.b=value`` overrides on a resolved config (values parsed as YAML, as Hydra does)."""
    if not overrides:
        return cfg
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    for o in overrides:
        if "=" not in o or o.startswith(("+", "~")):
            raise ConfigError(f"override '{o}': use key=value on the run's config (e.g. data.eval_datasets=[NAME])")
    try:
        merged = OmegaConf.merge(OmegaConf.create(config_to_dict(cfg)), OmegaConf.from_dotlist(list(overrides)))
        data = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"overrides: {' '.join(str(exc).split())}") from None
    return parse_config(data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launcher predict",
        description="Batched generation on a dataset's prompts; writes RUN_DIR/predict/<dataset>/"
                    "predictions.jsonl and metrics.json (ROUGE-1/2/L, BLEU-4 as LLaMA-Factory computes them).",
    )
    parser.add_argument("run_dir")
    parser.add_argument("overrides", nargs="*", help="key=value on the run's config, e.g. data.eval_datasets=[NAME]")
    parser.add_argument("--dataset", action="append", default=[],
                        help="dataset name from dataset_info.json (repeatable); default: the run's eval data")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=0.95)
    parser.add_argument("--top-p", type=float, default=0.7)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples")
    parser.add_argument("--checkpoint", default=None, help="use checkpoint step-N instead of the final model")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--link-to", default=None, metavar="DIR",
                        help="also link the written files into DIR (LLaMA-Factory's output_dir); files there that"
                             " are not links are left alone")
    parser.add_argument("--from-llamafactory", metavar="FILE.yaml", default=None,
                        help="a LLaMA-Factory do_predict file (model_name_or_path, adapter_name_or_path,"
                             " eval_dataset, ...): translated to these arguments; the equivalent command is printed")
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    return parser


def link_outputs(out_dir: Path, target: Path) -> list[str]:
    """Link each file of ``out_dir`` into ``target`` (made if missing); a link there is replaced, anything else is
    left alone and named in the returned lines."""
    import os

    target.mkdir(parents=True, exist_ok=True)
    skipped = []
    for item in sorted(Path(out_dir).iterdir()):
        link = target / item.name
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            skipped.append(f"{link} exists and is not a link; left as it is")
            continue
        link.symlink_to(os.path.relpath(item.resolve(), target.resolve()))
    return skipped


def predict_main(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)
    from launcher.inference.predict import PredictArgs, run_predict
    from launcher.inference.trained import check_run_dir

    run_dir = check_run_dir(Path(args.run_dir))
    cfg = apply_overrides(load_run_config(run_dir), args.overrides)
    pargs = PredictArgs(
        datasets=list(args.dataset), max_new_tokens=args.max_new_tokens, do_sample=args.do_sample,
        temperature=args.temperature, top_p=args.top_p, batch_size=args.batch_size, limit=args.limit,
        checkpoint=args.checkpoint, dtype=args.dtype, seed=args.seed,
    )
    metrics = run_predict(cfg, run_dir, pargs, progress=None if not args.no_progress else False)
    shown = {k: metrics[k] for k in ("rouge-1", "rouge-2", "rouge-l", "bleu-4", "exact_match")}
    print(f"{metrics['dataset']}: {metrics['n']} samples, {metrics['model']}, "
          f"{metrics['generated_tokens_per_s']:.0f} generated tokens/s")
    print(json.dumps(shown))
    print(f"written: {metrics['output_dir']}/predictions.jsonl, metrics.json")
    if args.link_to:
        for line in link_outputs(Path(metrics["output_dir"]), Path(args.link_to)):
            print(f"note: {line}")
        print(f"linked into: {args.link_to}")
    return 0
