"""``launcher <subcommand> ...``: a table from subcommand to function."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from launcher.errors import ConfigError, LauncherError

USAGE = """usage: launcher <command> [args]   (launcher --version; launcher train --help lists the config groups)

commands:
  train [OVERRIDES...] [--dry-run] [--name NAME]   compose, check (preflight) and launch a training run,
                                                   here (cluster=local) or on SLURM (cluster=slurm_*)
  train --from-llamafactory FILE.yaml [OVERRIDES...] [--dry-run] [-m]
                                                   a llamafactory-cli train file, translated (the
                                                   equivalent command is printed) and launched
  train -m OVERRIDES... [--parallel N] [--dry-run] grid sweep (a=1,2 b=x,y): one SLURM job array per
                                                   resource shape; locally one after another or N at a time
  sweep report SWEEP_DIR [--out PNG] [--json]      every point's state, losses, errors; a plot
  status|logs [-f]|cancel RUN_DIR|JOB_ID           follow a SLURM run
  data preview|dump|build [OVERRIDES...]           look at the tokenized data; build its cache on CPU
  export RUN_DIR [--out DIR] [--format hf|gguf]   merge LoRA / write a standalone HF model, or one GGUF file
  predict RUN_DIR [--dataset NAME]                 generate on a dataset; ROUGE-1/2/L, BLEU-4
  chat RUN_DIR [--system TEXT] [--base]            chat with the trained model in the terminal
  serve RUN_DIR|MODEL_DIR [--host H] [--port N] [--api-key K]
                                                   OpenAI-compatible API (/v1/chat/completions, streaming)
  predict|export|chat|serve --from-llamafactory FILE.yaml [ARGS...] [--dry-run]
                                                   a LLaMA-Factory do_predict / merge / inference file,
                                                   translated (the equivalent command is printed) and run
  bench [OVERRIDES...] [--steps N]                 speed and memory of N training steps (experiment=bench_reference)
  plot RUN_DIR                                     redraw the loss plot of a run
  ui [--host 127.0.0.1] [--port 7860] [--root DIR] web app: compose, check, submit, watch, compare, chat

Overrides are Hydra's: `launcher train method=lora method.lora.r=16 train.max_steps=100`.
"""


def expand_llamafactory(argv: list[str]) -> list[str]:
    """Replace ``--from-llamafactory FILE`` by the overrides it translates to; print the equivalent command."""
    for i, arg in enumerate(argv):
        if arg == "--from-llamafactory" or arg.startswith("--from-llamafactory="):
            if "=" in arg:
                path, rest = arg.split("=", 1)[1], argv[i + 1:]
            elif i + 1 < len(argv):
                path, rest = argv[i + 1], argv[i + 2:]
            else:
                raise ConfigError("--from-llamafactory: give the llamafactory-cli train YAML file")
            from pathlib import Path

            from launcher.config.compose import config_groups
            from launcher.config.llamafactory import command_line, drop_replaced_groups, translate_file

            translation = translate_file(Path(path))
            overrides, replaced = drop_replaced_groups(translation.overrides, rest, config_groups())
            expanded = argv[:i] + overrides + rest
            for note in translation.notes + replaced:
                print(f"note: {note}", file=sys.stderr)
            print("# equivalent command:\n" + command_line(expanded), flush=True)
            return expanded
    return argv


def llamafactory_file(argv: list[str]) -> tuple[int, str] | None:
    """(index, path) of ``--from-llamafactory FILE`` (or ``--from-llamafactory=FILE``) in argv, or None."""
    for i, arg in enumerate(argv):
        if arg.startswith("--from-llamafactory="):
            return i, arg.split("=", 1)[1]
        if arg == "--from-llamafactory":
            if i + 1 >= len(argv):
                raise ConfigError("--from-llamafactory: give the LLaMA-Factory YAML file")
            return i, argv[i + 1]
    return None


def from_llamafactory_after(command: str, main_function: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
    """``launcher predict|export|chat|serve --from-llamafactory FILE [more args] [--dry-run]``: the file
    translated to the command's arguments (launcher.config.llamafactory_after), the equivalent command printed,
    then run (with --dry-run: not run)."""

    def call(argv: list[str]) -> int:
        help_asked = any(a in ("-h", "--help") for a in argv)
        found = None if help_asked else llamafactory_file(argv)
        if found is None:
            if "--dry-run" in argv and not help_asked:  # the flag is declared for --help; never ignored
                from launcher.shell import shell_command

                print(shell_command(["launcher", command, *[a for a in argv if a != "--dry-run"]]))
                print(f"dry run: nothing was run (launcher {command})")
                return 0
            return main_function(argv)
        i, path = found
        rest = argv[:i] + argv[i + (1 if "=" in argv[i] else 2):]
        dry_run = "--dry-run" in rest
        rest = [a for a in rest if a != "--dry-run"]
        from pathlib import Path

        from launcher.config.llamafactory_after import translate_after_file
        from launcher.shell import shell_command

        translation = translate_after_file(Path(path), command)
        for note in translation.notes:
            print(f"note: {note}", file=sys.stderr)
        argv = translation.argv + rest
        print("# equivalent command:\n" + shell_command(["launcher", command, *argv]), flush=True)
        if dry_run:
            print(f"dry run: nothing was run (launcher {command})")
            return 0
        return main_function(argv)

    call.__name__ = getattr(main_function, "__name__", command)
    return call


def train_main(argv: list[str]) -> int:
    help_asked = any(a in ("-h", "--help") for a in argv)
    found = None if help_asked else llamafactory_file(argv)
    if found is not None:  # a do_predict or export file given to train goes where LLaMA-Factory would send it
        from pathlib import Path

        from launcher.config.llamafactory import read_yaml
        from launcher.config.llamafactory_after import command_for

        command = command_for(read_yaml(Path(found[1]))[0])
        if command == "predict":
            print(f"note: {found[1]}: do_predict: true -> launcher predict --from-llamafactory", file=sys.stderr)
            return COMMANDS["predict"](argv)
        if command == "export":
            raise ConfigError(f"{found[1]}: export_dir: a merge/export file; use launcher export --from-llamafactory"
                              f" {found[1]}")
        if command == "chat":
            raise ConfigError(f"{found[1]}: no stage, dataset or do_train: an inference file; use launcher chat (or"
                              f" serve) --from-llamafactory {found[1]}")
    if not help_asked:  # --help lists this command's flags whatever else the line holds
        argv = expand_llamafactory(argv)
        refuse_config_files(positional_words(argv))
    epilog = None
    if any(a in ("-h", "--help") for a in argv):
        from launcher.config.compose import config_groups_help

        epilog = config_groups_help()
    parser = argparse.ArgumentParser(prog="launcher train", add_help=True, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, key=value or group=option; with -m, a=1,2 or"
                        " range(1,4) or choice(x,y) sweep")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and run the preflight; launch nothing")
    parser.add_argument("--name", default=None, help="run or sweep name (default: <model>-<method>-<data>)")
    # Consumed before this parser (expand_llamafactory); declared so that --help lists it.
    parser.add_argument("--from-llamafactory", metavar="FILE.yaml", default=None,
                        help="a llamafactory-cli train file: translated to overrides (the equivalent command is"
                             " printed); overrides after it win")
    parser.add_argument("-m", "--multirun", action="store_true",
                        help="a grid sweep: every combination of the comma lists / range() / choice() / glob()")
    parser.add_argument("--parallel", type=int, default=1, help="-m with cluster=local: points run at the same time")
    parser.add_argument("--args-file", metavar="FILE.yaml", default=None,
                        help="saved arguments (the web UI's Save): its overrides, name and sweep grid; overrides"
                             " and --name given here win")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error("--parallel must be >= 1")
    from launcher.launch.plan import dry_run_report, plan_run, print_messages

    if args.args_file:
        from launcher.config.args_file import read_args_file

        saved = read_args_file(args.args_file)
        args.overrides = saved.overrides + saved.sweep + args.overrides
        args.name = args.name or saved.name
        args.multirun = args.multirun or bool(saved.sweep)
    plan = plan_run(args.overrides, args.name, sweep=args.multirun, parallel=args.parallel)
    print_messages(plan)
    plan.raise_if_refused()  # before anything is written or queued
    if args.dry_run:
        print(dry_run_report(plan))
        return 0
    from launcher.launch.run import launch_run

    return launch_run(plan).rc


LLAMAFACTORY_KEYS = ("model_name_or_path", "stage", "finetuning_type", "dataset", "do_train", "output_dir")


def positional_words(argv: list[str]) -> list[str]:
    """The words of ``argv`` that are neither flags nor a flag's value (``--args-file F.yaml``'s F.yaml is the
    flag's, not an override)."""
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in ("--args-file", "--name", "--parallel"):
            skip = True
        elif not word.startswith("-"):
            out.append(word)
    return out


def refuse_config_files(overrides: list[str]) -> None:
    """A YAML file where overrides belong: say how to use it instead of Hydra's parse error."""
    for arg in overrides:
        if "=" in arg or not arg.endswith((".yaml", ".yml", ".json")):
            continue
        keys: set = set()
        try:
            import yaml
            from pathlib import Path

            loaded = yaml.safe_load(Path(arg).read_text(encoding="utf-8"))
            keys = set(loaded) if isinstance(loaded, dict) else set()
        except Exception:  # missing, unreadable or not YAML: the generic hint below still applies
            pass
        if "launcher_args" in keys:  # launcher.config.args_file.FORMAT_KEY: the web UI's saved arguments
            raise ConfigError(f"{arg} is a saved-arguments file: use launcher train --args-file {arg}")
        if len(keys & set(LLAMAFACTORY_KEYS)) >= 2:
            raise ConfigError(f"{arg} looks like a LLaMA-Factory config: use launcher train --from-llamafactory {arg}")
        raise ConfigError(
            f"{arg}: launcher train takes Hydra overrides (key=value, group=option), not a config file; put"
            " settings in conf/experiment/NAME.yaml (first line: # @package _global_) and run launcher train"
            " experiment=NAME"
        )


def plot_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="launcher plot")
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    from launcher.training.metrics import plot_loss

    out = plot_loss(args.run_dir)
    print(out or "no metrics to plot")
    return 0 if out else 1


def data_main(argv: list[str]) -> int:
    from launcher.data.cli import data_main as impl

    return impl(argv)


def _lazy(module: str, function: str) -> Callable[[list[str]], int]:
    """A subcommand whose module is imported only when it runs (start-up time matters)."""

    def call(argv: list[str]) -> int:
        import importlib

        return getattr(importlib.import_module(module), function)(argv)

    call.__name__ = function
    return call


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": train_main,
    "data": data_main,
    "bench": _lazy("launcher.launch.bench", "bench_main"),
    "plot": plot_main,
    "sweep": _lazy("launcher.sweep.report", "sweep_command_main"),
    "status": _lazy("launcher.slurm.jobs", "status_main"),
    "logs": _lazy("launcher.slurm.jobs", "logs_main"),
    "cancel": _lazy("launcher.slurm.jobs", "cancel_main"),
    "export": from_llamafactory_after("export", _lazy("launcher.export.cli", "export_main")),
    "predict": from_llamafactory_after("predict", _lazy("launcher.inference.predict_cli", "predict_main")),
    "chat": from_llamafactory_after("chat", _lazy("launcher.inference.chat", "chat_main")),
    "serve": from_llamafactory_after("serve", _lazy("launcher.serve.cli", "serve_main")),
    "ui": _lazy("launcher.ui.server", "ui_main"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version", "version"):
        from launcher import __version__

        print(f"launcher {__version__}")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"error: unknown command '{argv[0]}'\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return command(argv[1:])
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
