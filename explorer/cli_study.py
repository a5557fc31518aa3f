"""``mcnn-explore study launch|export|status``: the study command line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import optuna
from mlflow.tracking import MlflowClient

from dashboards import write_report
from explorer import export, preflight
from explorer.confirm import best_group, groups, repeat_attrs, top_trials
from explorer.driver import StudyDriver
from explorer.objective import OBJECTIVES
from explorer.progress import ProgressLine
from explorer.record import Outcome, TrialRecord, enqueue, records
from explorer.speedup import leaderboard, speedup
from explorer.study import PRUNERS, StudySettings, best_record
from explorer.tracking import trials_view_query, ui_command
from launchers import Launcher, MpirunLauncher, SlurmLauncher
from launchers.hosts import HostInfo, detect_local, hosts_from_slurm, read_hostfile
from mcnn_base.errors import ConfigError
from mcnn_base.urls import mask_url, scrub

__all__ = ["absolute_sqlite", "add_commands", "quiet_libraries",
           "write_study_report"]

DEFAULT_STORAGE = "sqlite:///optuna.db"
DEFAULT_TRACKING = "sqlite:///mlflow.db"
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def absolute_sqlite(url: str) -> str:
    """``sqlite:///rel.db`` → ``sqlite:////abs/rel.db`` so jobs, UI and export agree on the file."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + str(Path(url[len(prefix):]).resolve())
    return url


def _hosts(args: argparse.Namespace) -> list[HostInfo]:
    if args.hosts:
        return read_hostfile(args.hosts)
    if os.environ.get("SLURM_JOB_NODELIST"):
        return hosts_from_slurm()
    return [detect_local()]


def _concurrency(value: str) -> int | None:
    """``--concurrent-trials``: ``auto`` (one trial per host of the pool) or a count >= 1."""
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"--concurrent-trials {value!r}: expected 'auto' or a whole number >= 1")
    return int(value)


_MCA_KEY = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
_MCA_VALUE = re.compile(r"^[A-Za-z0-9_./,:=+@^-]{1,500}$")


def _mca(items: list[str] | None) -> dict[str, str]:
    """``--mca KEY=VALUE`` (repeatable): extra Open MPI parameters for every trial's mpirun."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not _MCA_KEY.match(key) or not _MCA_VALUE.match(value):
            raise ConfigError(f"--mca {item!r}: expected KEY=VALUE, e.g. "
                              "btl_tcp_if_include=eth0 (no spaces or shell metacharacters)")
        out[key] = value
    return out


def _exit_on_sigterm() -> None:
    """``kill`` (SIGTERM) stops a study like Ctrl-C: running trials are cancelled with their
    whole MPI tree and recorded FAILED ("interrupted") before the driver exits."""
    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def quiet_libraries() -> None:
    """Keep Optuna's and MLflow's INFO chatter out of the progress output."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # MLflow logs a whole traceback for a database it cannot reach, then raises: the tracker
    # reports that in one line (explorer.tracking)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def _launch(args: argparse.Namespace) -> int:
    if not _STUDY_NAME.match(args.study):
        raise ConfigError(f"--study {args.study!r}: expected letters, digits, '.', '_' or '-' "
                          "(it names the MLflow experiment and the run folder)")
    for flag in ("trials", "timeout", "trial_timeout", "budget_node_hours"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be > 0, got {value}")
    if args.stall_timeout < 0:
        raise ConfigError(f"--stall-timeout must be >= 0 (0 turns it off), got {args.stall_timeout}")
    if args.target_accuracy is not None and not 0 < args.target_accuracy <= 1:
        raise ConfigError(f"--target-accuracy must be in (0, 1], got {args.target_accuracy}")
    data = Path(args.data)
    preflight.check_data_root(data)
    if args.launcher == "slurm":
        launcher: Launcher = SlurmLauncher(mpi=args.srun_mpi)
    else:
        launcher = MpirunLauncher()
    workdir = Path(args.workdir or Path("runs") / args.study).resolve()
    settings = StudySettings(
        space=Path(args.space), data_root=data.resolve(), study=args.study,
        storage=absolute_sqlite(args.storage), tracking_uri=absolute_sqlite(args.tracking_uri),
        workdir=workdir, hosts=_hosts(args), trials=args.trials, timeout_s=args.timeout,
        trial_timeout_s=args.trial_timeout, target_accuracy=args.target_accuracy,
        sampler=args.sampler, pruner=args.pruner, seed=args.seed, objective=args.objective,
        multi_objective=args.multi_objective, retry_stale=not args.no_retry_stale,
        stale_after_s=args.stale_after,
        budget_node_s=None if args.budget_node_hours is None else args.budget_node_hours * 3600,
        concurrent_trials=_concurrency(args.concurrent_trials),
        stall_timeout_s=None if args.stall_timeout == 0 else args.stall_timeout,
        mca=_mca(args.mca), baseline=args.baseline, strategy=args.strategy,
        allow_emulated_bf16=args.allow_emulated_bf16)
    quiet_libraries()
    _exit_on_sigterm()
    driver = StudyDriver(settings, launcher, progress=ProgressLine(args.trials))
    preflight.check_launch(settings, driver.space)  # storage, tracking, layout, --workdir
    print(f"study {args.study!r}: space {args.space}, {args.trials} trials, storage "
          f"{mask_url(settings.storage)}, tracking {mask_url(settings.tracking_uri)}, runs in "
          f"{workdir}", flush=True)
    study = driver.run()
    best = best_record(study)
    print()
    if best is None:
        print("no completed feasible trial yet")
    else:
        tta = best.tta_s
        what = f"TTA {tta:.1f}s" if tta is not None else "target not reached"
        if args.objective == "images_per_sec":
            what = f"{(best.values or [0.0])[0]:.1f} images/s (steady state)"
        print(f"best: trial {best.number}, {what}, best val accuracy "
              f"{best.best_val_accuracy or 0.0:.3f}")
        for key, value in sorted(best.params.items()):
            print(f"  {key} = {value}")
        derived = best.derived
        print(f"  -> global batch {derived.get('global_batch')}, world size "
              f"{derived.get('world_size')}, schedule {derived.get('piecewise')}")
    trials = records(study)
    found = speedup(trials, args.objective)
    if found is not None:
        print(f"speedup:    {found.describe()}")
    _print_fastest(trials, args.objective, settings.tracking_uri, args.study)
    report = write_study_report(study, settings)
    if report is not None:
        print(f"report:     {report}")
    # passwords stay masked: the user fills in their own (or uses ~/.pgpass / env)
    print(f"MLflow UI:  mcnn-explore ui --tracking-uri {mask_url(settings.tracking_uri)} "
          f"--study {args.study}")
    print(f"            (or: {ui_command(mask_url(settings.tracking_uri))})")
    print(f"export:     mcnn-explore study export --study {args.study} --storage "
          f"{mask_url(settings.storage)} --format yaml --out best.yaml")
    return 0


def _print_fastest(trials: list[TrialRecord], objective: str, tracking_uri: str,
                   study: str) -> None:
    """The fastest trials, each with its run's page in the MLflow UI (as ``mcnn-explore ui``
    serves it on its default address; MLflow's URL cannot choose the table's columns)."""
    base = None
    with contextlib.suppress(Exception):  # no store or experiment: the list, without links
        exp = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(study)
        if exp is not None:
            base = f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"

    def link(r: TrialRecord) -> str | None:
        return f"{base}/{r.mlflow_run_id}" if base and r.mlflow_run_id else None

    lines = leaderboard(trials, objective, link=link)
    if lines:
        print("fastest:" + "".join(f"\n  {line}" for line in lines))
        if base:
            print(f"            all trials by TTA: {base}{trials_view_query()}")


def write_study_report(study: optuna.Study, settings: StudySettings) -> Path | None:
    """The study's HTML report in its run folder, logged on the parent run; never fatal."""
    try:
        client = MlflowClient(tracking_uri=settings.tracking_uri)
        return write_report(study, settings.workdir / "report.html", client,
                            parent_run_id=study.user_attrs.get("mlflow_parent_run_id"))
    except Exception as exc:  # the study's results are safe in Optuna/MLflow already
        why = scrub(str(exc), settings.tracking_uri)
        print(f"warning: could not write the report {settings.workdir / 'report.html'}: {why}",
              file=sys.stderr)
        return None


def _export(args: argparse.Namespace) -> int:
    study = export.load_study(args.study, absolute_sqlite(args.storage))
    out = Path(args.out) if args.out else None
    if args.format == "yaml":
        text = export.render_yaml(study)
    else:
        if out is not None:
            config_path = out.with_suffix(".yaml") if out.suffix != ".yaml" else \
                out.with_name(out.name + ".config.yaml")
        else:
            config_path = Path(f"{args.study}-best.yaml")
        config_path.write_text(export.render_yaml(study))
        print(f"wrote the config it runs: {config_path}", file=sys.stderr)
        render = export.render_mpirun if args.format == "mpirun" else export.render_sbatch_script
        text = render(study, config_path)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        if args.format != "yaml":
            out.chmod(0o755)
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    study = export.load_study(args.study, absolute_sqlite(args.storage))
    trials = records(study)
    objective = str(study.user_attrs.get("objective", "tta_s"))
    found = speedup(trials, objective)
    if found is not None:
        print(f"speedup: {found.describe()}")
    _print_fastest(trials, objective, absolute_sqlite(args.tracking_uri), args.study)
    for host, why in (study.user_attrs.get("excluded_hosts") or {}).items():
        print(f"host {host} excluded: {why} (no new trial is placed on it)")
    for host, why in (study.user_attrs.get("quarantined_hosts") or {}).items():
        print(f"host {host} quarantined: {why} (no new trial for the rest of the study)")
    print(f"{'#':>4} {'state':<10} {'value':>12} {'tta_s':>8} {'acc':>6}  reason")
    for t in trials:
        value = "-" if t.values is None else f"{t.values[0]:.4g}"
        tta, acc = t.tta_s, t.best_val_accuracy
        mark = (f" [baseline: {t.fixed.get('name')}]" if t.baseline else
                f" [confirms trial {t.confirm_of}]" if t.confirm_of is not None else "")
        print(f"{t.number:>4} {t.state.value:<10} {value:>12} "
              f"{'-' if tta is None else f'{tta:.1f}':>8} "
              f"{'-' if acc is None else f'{acc:.3f}':>6}  {t.reason}{mark}")
    return 0


def _confirm(args: argparse.Namespace) -> int:
    """Rerun the top configs and the baseline with new seeds; report medians."""
    if args.top < 1 or args.repeats < 1:
        raise ConfigError(f"--top and --repeats must be >= 1, got --top {args.top} --repeats "
                          f"{args.repeats}")
    storage, tracking = absolute_sqlite(args.storage), absolute_sqlite(args.tracking_uri)
    study = export.load_study(args.study, storage)
    attrs = study.user_attrs
    objective = str(attrs.get("objective", "tta_s"))
    if objective not in ("tta_s", "tta_wall_s", "tta_interp_s"):
        raise ConfigError(f"study {args.study!r} optimises {objective}; confirm compares TTA")
    trials = records(study)
    roots = top_trials(trials, objective, args.top)  # raises when nothing reached the target
    roots += [r for r in trials if r.baseline and r.state is Outcome.COMPLETED]
    space, data = Path(str(attrs.get("space", ""))), Path(str(attrs.get("data_root", "")))
    if not space.is_file():
        raise ConfigError(f"study {args.study!r}: its space file {str(space)!r} is gone; "
                          "confirm reruns trials from the space they were sampled in")
    preflight.check_data_root(data, "the study's data root")
    settings = StudySettings(
        space=space, data_root=data, study=args.study, storage=storage, tracking_uri=tracking,
        workdir=Path(args.workdir or Path("runs") / args.study).resolve(), hosts=_hosts(args),
        trials=len(roots) * args.repeats, trial_timeout_s=args.trial_timeout,
        target_accuracy=attrs.get("target_accuracy"), objective=objective, pruner="none",
        only_queued=True)
    quiet_libraries()
    _exit_on_sigterm()
    driver = StudyDriver(settings, MpirunLauncher(), progress=ProgressLine(settings.trials))
    preflight.check_launch(settings, driver.space)
    # repeats already run (a lost one is rerun, so its seed is free again)
    done = {r.number: sum(1 for t in trials if t.confirm_of == r.number and not t.lost)
            for r in roots}
    for root in roots:
        seed = int(root.config.get("seed", 0))
        for i in range(args.repeats):
            enqueue(study, **repeat_attrs(root, seed + 1 + done[root.number] + i))
    names = ", ".join(("baseline " if r.baseline else "") + f"trial {r.number}" for r in roots)
    print(f"confirming {names}: {args.repeats} new seed(s) each", flush=True)
    study = driver.run()
    trials = records(study)
    print()
    for group in groups(trials, objective):
        if group.confirmed:
            label = "baseline" if group.root.baseline else f"trial {group.root.number}"
            print(f"{label:>10}: {group.describe()}")
    found = speedup(trials, objective)
    if found is not None:
        print(f"speedup:    {found.describe()}")
    chosen = best_group(trials, objective)
    if chosen is not None:
        print(f"export picks trial {chosen.root.number} (lowest median): mcnn-explore study "
              f"export --study {args.study} --storage {mask_url(storage)} --out best.yaml")
    return 0


def add_commands(sub: Any) -> None:
    study = sub.add_parser("study", help="launch, export and inspect Optuna studies")
    ssub = study.add_subparsers(dest="study_command", required=True)
    p = ssub.add_parser("launch", help="run (or resume) a study: each trial is an mpirun job")
    p.add_argument("--space", required=True, help="search-space YAML (see search_spaces/)")
    p.add_argument("--data", required=True, help="BBBC021 tree every trial trains on")
    p.add_argument("--study", required=True, help="study name (also the MLflow experiment)")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"Optuna storage URL, any SQLAlchemy URL (default {DEFAULT_STORAGE})")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING,
                   help=f"MLflow tracking URI (default {DEFAULT_TRACKING})")
    p.add_argument("--trials", type=int, default=10,
                   help="finished trials the study should hold (default 10)")
    p.add_argument("--timeout", type=float,
                   help="seconds from the driver's start (set-up included) after which no new "
                        "trial starts")
    p.add_argument("--trial-timeout", type=float, help="seconds before a trial is ended, FAILED")
    p.add_argument("--budget-node-hours", type=float,
                   help="start no new trial once the study's trials used this much compute")
    p.add_argument("--target-accuracy", type=float,
                   help="validation accuracy that stops the TTA clock (default: the space's)")
    p.add_argument("--hosts", help="Open MPI hostfile (default: SLURM allocation or this machine)")
    p.add_argument("--sampler", choices=("tpe", "gp", "random"), default="tpe")
    p.add_argument("--pruner", choices=PRUNERS, default="sh",
                   help="sh: successive halving on training seconds (default); hyperband: on "
                        "seconds; median: on evaluations; none")
    p.add_argument("--seed", type=int, help="sampler seed")
    p.add_argument("--objective", choices=OBJECTIVES,
                   default="tta_s", help="tta_s (MLPerf-style: the first evaluation at the "
                   "target, default), tta_wall_s (adds start-up), tta_interp_s (this project's "
                   "interpolated crossing of the target, smoother) or images_per_sec (a layout "
                   "study: steady-state throughput, no evaluation)")
    p.add_argument("--multi-objective", action="store_true",
                   help="minimise TTA and node-hours together (a Pareto front)")
    p.add_argument("--strategy", choices=("joint", "layout-first"), default="joint",
                   help="joint: sample layout and schedule together (default); layout-first: "
                        "measure the images/s of every layout first, then search the schedule, "
                        "batch and precision on the fastest layout for each batch")
    p.add_argument("--allow-emulated-bf16", action="store_true",
                   help="let mixed_bfloat16 trials run on hosts whose CPU has no bf16 hardware "
                        "(no avx512_bf16, no amx_bf16): bf16 is emulated there and slower than "
                        "float32, so by default such trials are infeasible; likewise "
                        "float32_bf16math on hosts without AMX")
    p.add_argument("--launcher", choices=("mpirun", "slurm"), default="mpirun")
    p.add_argument("--srun-mpi", default="pmix", metavar="PLUGIN",
                   help="with --launcher slurm: srun's --mpi plugin (default pmix; pmi2, ...)")
    p.add_argument("--concurrent-trials", default="auto", metavar="N|auto",
                   help="trials run at once, each on its own hosts (default auto: one per host "
                        "of the pool; trials never share a node)")
    p.add_argument("--stall-timeout", type=float, default=600.0, metavar="S",
                   help="end a trial FAILED when its job writes no event for S seconds (a hung "
                        "or lost rank); 0 turns it off (default 600)")
    p.add_argument("--mca", action="append", metavar="KEY=VALUE",
                   help="extra Open MPI --mca parameter for every trial (repeatable)")
    p.add_argument("--baseline", metavar="seed|FILE",
                   help="run a fixed config as the study's first trial and report the speedup "
                        "over it: 'seed' (the seed's hand-tuned run, mapped onto the hosts; "
                        "README) or your own training config file")
    p.add_argument("--workdir", help="trial folders and MLflow artifacts (default runs/STUDY)")
    p.add_argument("--no-retry-stale", action="store_true",
                   help="do not re-queue trials left RUNNING by a killed driver")
    p.add_argument("--stale-after", type=float, default=300.0,
                   help="heartbeat age (s) after which another host's RUNNING trial is stale")
    p.set_defaults(func=_launch)
    e = ssub.add_parser("export", help="write the best trial as a config, mpirun or sbatch")
    e.add_argument("--study", required=True)
    e.add_argument("--storage", default=DEFAULT_STORAGE)
    e.add_argument("--format", choices=("yaml", "mpirun", "sbatch"), default="yaml")
    e.add_argument("--out", help="output file (default: stdout)")
    e.set_defaults(func=_export)
    c = ssub.add_parser("confirm", help="rerun the top configs and the baseline with new seeds; "
                        "export then picks by median TTA")
    c.add_argument("--study", required=True)
    c.add_argument("--storage", default=DEFAULT_STORAGE)
    c.add_argument("--tracking-uri", default=DEFAULT_TRACKING)
    c.add_argument("--top", type=int, default=3, help="how many of the best configs (default 3)")
    c.add_argument("--repeats", type=int, default=5,
                   help="new seeds per config (default 5: with the original, 6 runs; the "
                        "olympic median drops the fastest and the slowest)")
    c.add_argument("--hosts", help="Open MPI hostfile (default: SLURM allocation or this machine)")
    c.add_argument("--trial-timeout", type=float, help="seconds before a run is ended, FAILED")
    c.add_argument("--workdir", help="trial folders (default runs/STUDY)")
    c.set_defaults(func=_confirm)
    s = ssub.add_parser("status", help="list a study's trials")
    s.add_argument("--study", required=True)
    s.add_argument("--storage", default=DEFAULT_STORAGE)
    s.add_argument("--tracking-uri", default=DEFAULT_TRACKING,
                   help="for the MLflow run links of the fastest trials")
    s.set_defaults(func=_status)
