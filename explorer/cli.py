"""``mcnn-explore``: the command line.

Subcommands register themselves in :data:`COMMANDS` (name → (setup, run)); user errors print one
line (``error: ...``) and exit 2, without a traceback; so do failures of the environment (a job
that cannot start, a full or read-only disk), with exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from explorer.mcnn.bbbc021 import load_metadata
from explorer.mcnn.config import load_config
from explorer.mcnn.shards import prepare_shards
from explorer.mcnn.synth import SynthOptions, parse_size, synthesize, synthesize_from_metadata
from mcnn_base.errors import LaunchError, UserError, os_error_message
from mcnn_base.native_logs import VERBOSE_ENV, filter_native_info

__all__ = ["main"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _data_synth(args: argparse.Namespace) -> int:
    size = parse_size(args.size)
    if args.from_metadata:
        out = synthesize_from_metadata(args.out, args.from_metadata, plates=args.plates,
                                       size=size, seed=args.seed, workers=args.workers)
    else:
        out = synthesize(args.out, SynthOptions(size=size, images=args.images, seed=args.seed,
                                                moas=args.moas, workers=args.workers))
    print(f"wrote synthetic BBBC021 tree {out}")
    return 0


def _data_summary(args: argparse.Namespace) -> int:
    dataset = load_metadata(args.root, drop_dmso=args.drop_dmso,
                            check_files=not args.metadata_only)
    summary = dataset.summary()
    summary["metadata_only"] = bool(args.metadata_only)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    width = max(len(c) for c in dataset.classes) if dataset.classes else 10
    for key in ("root", "images", "annotated_images", "classes", "compounds",
                "compound_concentration_pairs", "plates"):
        print(f"{key.replace('_', ' '):<30} {summary[key]}")
    print("images per class:")
    per_class: dict[str, int] = summary["images_per_class"]  # type: ignore[assignment]
    for name, count in per_class.items():
        print(f"  {name:<{width}} {count}")
    return 0


def _data_prepare(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    # with --json, stdout holds only the summary: messages (e.g. a rebuild) go to stderr;
    # TensorFlow's native INFO lines are left out (unless -v)
    with filter_native_info():
        shards = prepare_shards(cfg.data, verify="full", log=(
            lambda message: print(message, file=sys.stderr)) if args.json else print)
    if args.json:
        print(json.dumps({"path": str(shards.path), "n_train": shards.n_train,
                          "n_val": shards.n_val, "classes": shards.classes,
                          "split": shards.split}))
        return 0
    print(f"shards ready: {shards.path} ({shards.n_train} train / {shards.n_val} val, "
          f"split {shards.split})")
    return 0


def _add_data(sub: Any) -> None:
    data = sub.add_parser("data", help="synthesize, summarize and preprocess BBBC021 trees")
    dsub = data.add_subparsers(dest="data_command", required=True)
    synth = dsub.add_parser("synth", help="write a synthetic BBBC021-layout tree")
    synth.add_argument("out", help="output folder (must be new or empty)")
    synth.add_argument("--size", default="64x80", help="HEIGHTxWIDTH of the TIFFs (default 64x80;"
                       " the real set is 1024x1280)")
    synth.add_argument("--images", type=int, default=624, help="fields of view (default 624)")
    synth.add_argument("--moas", type=int, default=12, help="MoA classes besides DMSO (1-12)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=2, help="rendering threads")
    synth.add_argument("--from-metadata", metavar="DIR",
                       help="lay out the tree of the real BBBC021 CSVs found in DIR")
    synth.add_argument("--plates", type=int, default=2,
                       help="with --from-metadata: how many plates get TIFFs (default 2)")
    synth.set_defaults(func=_data_synth)
    summ = dsub.add_parser("summary", help="count images, classes, compounds and plates")
    summ.add_argument("root")
    summ.add_argument("--metadata-only", action="store_true",
                      help="read only the two CSVs (no TIFF is opened or checked)")
    summ.add_argument("--drop-dmso", action="store_true", help="leave DMSO out of the classes")
    summ.add_argument("--json", action="store_true", help="print JSON (keys in docs/DATA.md)")
    summ.set_defaults(func=_data_summary)
    prep = dsub.add_parser("prepare", help="build the shard cache of a training config")
    prep.add_argument("--config", required=True)
    prep.add_argument("--json", action="store_true", help="print only a JSON summary")
    prep.set_defaults(func=_data_prepare)


COMMANDS: list[Callable[[Any], None]] = [_add_data]

# The other subcommands: name -> (the module whose ``add_commands`` adds it, its help line).
# Those modules import Optuna, MLflow and plotly at the top (seconds), so the parser imports only
# the modules of the commands named on the command line (``--help`` imports none of them). This
# is the one place the CLI imports by name (tests/test_imports.py allows it here only); keep each
# help line the same as its module's (tests/explorer_tests/test_cli.py checks).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("explorer.cli_train", "run one training config (mpirun + Horovod by default)"),
    "study": ("explorer.cli_study", "launch, export and inspect Optuna studies"),
    "dashboard": ("explorer.cli_review", "write a study's self-contained HTML report"),
    "ui": ("explorer.cli_review", "start the MLflow UI (127.0.0.1 by default)"),
    "demo": ("explorer.demo", "synthesize data and run a small real study on it"),
    "rehearse": ("explorer.cli_rehearse",
                 "rehearse a study on simulated hosts (calibrated model)"),
}


def _add_subcommands(sub: Any, argv: Sequence[str] | None) -> None:
    """Add :data:`SUBCOMMANDS`: from their module when ``argv`` names them (all of them when
    ``argv`` is None), otherwise as a bare entry that only lists the command and its help."""
    named = set(SUBCOMMANDS) if argv is None else set(argv) & set(SUBCOMMANDS)
    wanted = {SUBCOMMANDS[name][0] for name in named}
    loaded: set[str] = set()
    for name, (module, help_) in SUBCOMMANDS.items():
        if module in wanted:
            if module not in loaded:
                importlib.import_module(module).add_commands(sub)
                loaded.add(module)
        else:
            sub.add_parser(name, help=help_)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser; given ``argv``, it imports only the subcommand modules that
    ``argv`` names (see :data:`SUBCOMMANDS`)."""
    parser = argparse.ArgumentParser(
        prog="mcnn-explore",
        description="Find the fastest way to train M-CNN on BBBC021 with Optuna, Horovod, MLflow.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show TensorFlow's native INFO lines (here and in every job)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    _add_subcommands(sub, argv)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.verbose:  # inherited by every child: data preparation and the jobs' ranks
        os.environ[VERBOSE_ENV] = "1"
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        message = os_error_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
