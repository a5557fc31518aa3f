"""The study driver: Optuna ask → plan → launch → tail events → report/prune → tell, MLflow beside.

Trials never share a node (that would corrupt their timings): on one machine they run one at a
time; on a pool of H hosts up to ``concurrent_trials`` (default H) run at once, each on a disjoint
slice (:class:`explorer.pool.HostPool`). Several drivers may share one study (an RDB storage such
as PostgreSQL): Optuna hands each ``ask`` a distinct trial, and each driver counts the others'
live trials against ``--trials``. A driver is the only writer of its trials to Optuna and MLflow;
jobs only write their events file. A failing trial — crash, NaN, a killed or hung rank, timeout,
a launcher error — is recorded and the study goes on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml

from explorer.mcnn.events import EventTail
from explorer.objective import (
    TrialOutcome,
    direction,
    intermediate_value,
    objective_values,
    steady_images_per_sec,
)
from explorer.pool import HostPool
from explorer.progress import ProgressLine
from explorer.schema import retry_schema_race, schema_lock
from explorer.stale import driver_identity, recover_stale, stale_reason
from explorer.tracking import RunRecorder, Tracker
from launchers.base import Job, JobState, Launcher
from launchers.hosts import HostInfo
from mcnn_base.errors import ConfigError, DataError, LaunchError
from mcnn_base.urls import mask_url
from search_spaces.plan import TrialPlan, build_plan, deep_merge, place, sample_params
from search_spaces.space import SearchSpace, load_space

__all__ = ["StudyDriver", "StudySettings", "outcome_from_events"]

HEARTBEAT_S = 15.0
JOB_EXIT_REASONS = {2: "bad_input", 3: "nan_loss", 4: "io_error"}
# Infeasible samples are told PRUNED (with positive constraint values): never launched, they must
# not count as completed trials for pruners' start-up counts, nor ever be the best trial.
_TELL_STATE = {"COMPLETED": optuna.trial.TrialState.COMPLETE,
               "INFEASIBLE": optuna.trial.TrialState.PRUNED,
               "PRUNED": optuna.trial.TrialState.PRUNED}


@dataclass
class StudySettings:
    """Everything ``mcnn-explore study launch`` was asked to do."""

    space: Path
    data_root: Path
    study: str
    storage: str
    tracking_uri: str
    workdir: Path
    hosts: list[HostInfo]
    trials: int = 10
    timeout_s: float | None = None
    trial_timeout_s: float | None = None
    target_accuracy: float | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int | None = None
    objective: str = "tta_s"
    multi_objective: bool = False
    retry_stale: bool = True
    stale_after_s: float = 300.0
    prepare_timeout_s: float = 6 * 3600.0
    max_infeasible_in_a_row: int = 50
    budget_node_s: float | None = None  # stop starting trials once this much compute is spent
    concurrent_trials: int | None = None  # None: one per host of the pool
    stall_timeout_s: float | None = 600.0  # a job silent this long (no event) is ended FAILED
    mca: dict[str, str] = field(default_factory=dict)  # extra Open MPI --mca settings
    overrides: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"space": str(self.space), "data_root": str(self.data_root), "study": self.study,
                "storage": mask_url(self.storage), "tracking_uri": mask_url(self.tracking_uri),
                "trials": self.trials, "timeout_s": self.timeout_s,
                "trial_timeout_s": self.trial_timeout_s, "target_accuracy": self.target_accuracy,
                "sampler": self.sampler, "pruner": self.pruner, "seed": self.seed,
                "objective": self.objective, "multi_objective": self.multi_objective,
                "hosts": ",".join(f"{h.name}:{h.cores}" for h in self.hosts)}


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; expected tpe, gp or random")


def make_pruner(name: str, max_epochs: float) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(2, int(max_epochs)))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {name!r}; expected median, hyperband or none")


def outcome_from_events(events: list[dict[str, Any]], state: JobState, returncode: int | None,
                        *, pruned: bool, nodes: int, wall_s: float) -> TrialOutcome:
    """Classify a finished job from its events and process state."""
    done = next((e for e in events if e.get("event") == "done"), None)
    failed = next((e for e in events if e.get("event") == "failed"), None)
    start = next((e for e in events if e.get("event") == "start"), None)
    accs = [e["val_accuracy"] for e in events
            if e.get("event") == "epoch" and e.get("val_accuracy") is not None]
    epochs = sum(1 for e in events if e.get("event") == "epoch")
    rate = steady_images_per_sec([float(e["images_per_sec"]) for e in events
                                  if e.get("event") == "epoch" and "images_per_sec" in e])
    best = float(done["best_val_accuracy"]) if done else max(accs, default=0.0)
    startup = (done or start or {}).get("startup_s")

    def outcome(kind: str, reason: str, tta_s: float | None = None) -> TrialOutcome:
        return TrialOutcome(kind, reason, tta_s=tta_s, startup_s=startup,
                            best_val_accuracy=best, epochs=epochs, wall_s=wall_s, nodes=nodes,
                            images_per_sec=rate)

    if pruned:
        return outcome("PRUNED", f"pruned after epoch {epochs}")
    if state is JobState.TIMEOUT:
        return outcome("FAILED", "timeout")
    if state is JobState.COMPLETED and done is not None:
        return outcome("COMPLETED", str(done.get("reason")), done.get("tta_s"))
    if failed is not None:
        detail = str(failed.get("detail", "")).strip().splitlines()
        why = f"{failed.get('reason')}: {detail[-1][:300]}" if detail else str(failed.get("reason"))
        return outcome("FAILED", why)
    if state is JobState.COMPLETED:
        return outcome("FAILED", "the job exited 0 without a done event")
    if returncode in JOB_EXIT_REASONS:  # the job's documented exit codes (explorer.mcnn.train)
        return outcome("FAILED", f"{JOB_EXIT_REASONS[returncode]} (exit code {returncode}, "
                                 "no failed event)")
    return outcome("FAILED", f"{state.value.lower()} (exit code {returncode})")


class StudyDriver:
    """Runs a study to ``settings.trials`` finished trials (resuming an existing one)."""

    def __init__(self, settings: StudySettings, launcher: Launcher, *,
                 progress: ProgressLine | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.s = settings
        self.launcher = launcher
        self.space: SearchSpace = load_space(settings.space)
        self.progress = progress or ProgressLine(settings.trials)
        self.log = log or self.progress.message
        self.overrides = dict(settings.overrides)
        self.throughput = settings.objective == "images_per_sec"
        if self.throughput:
            if settings.multi_objective:
                raise ConfigError("--objective images_per_sec is single-objective; drop "
                                  "--multi-objective")
            # a layout study: warm-up then timed epochs, no evaluation, no target
            self.overrides.update({"eval": False, "target_accuracy": None})
        elif settings.target_accuracy is not None:
            self.overrides["target_accuracy"] = settings.target_accuracy
        base = deep_merge(self.space.base, {"data": {"root": str(settings.data_root)}})
        merged = deep_merge(base, self.overrides)
        if merged.get("target_accuracy") is None and not self.throughput:
            raise ConfigError("a study needs a target accuracy: pass --target-accuracy or set "
                              f"target_accuracy in the base of {settings.space}")
        self.max_epochs = float(merged.get("max_epochs", 20.0))
        self.base = merged
        self.started = time.time()

    # -- set-up -----------------------------------------------------------------------------
    def _n_train(self) -> int:
        """Build the shard cache once, in a child process (the driver never imports TensorFlow,
        and no trial's start-up pays for preprocessing); return the training-image count."""
        from explorer.mcnn.config import config_from_dict

        config_from_dict(self.base, f"base of {self.s.space}")  # fail fast, in-process
        self.s.workdir.mkdir(parents=True, exist_ok=True)
        base_path = self.s.workdir / "base_config.yaml"
        # atomically: another driver of a shared study may be writing the same file
        partial = base_path.with_name(f".base_config.{os.getpid()}.yaml")
        partial.write_text(yaml.safe_dump(self.base, sort_keys=False))
        os.replace(partial, base_path)
        self.log(f"preparing shards for {self.s.data_root} ...")
        argv = [sys.executable, "-m", "explorer.cli", "data", "prepare", "--config",
                str(base_path), "--json"]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True,  # noqa: S603 - argv list
                                  timeout=self.s.prepare_timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise DataError(f"preparing shards of {self.s.data_root} took over "
                            f"{self.s.prepare_timeout_s:g}s") from None
        if proc.returncode != 0:
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
            detail = errors[-1][len("error: "):] if errors else proc.stderr.strip()[-1500:]
            raise DataError(f"cannot prepare the data of {self.s.data_root}: {detail}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        self.log(f"shards ready: {summary['n_train']} train / {summary['n_val']} val images, "
                 f"{len(summary['classes'])} classes ({summary['split']})")
        return int(summary["n_train"])

    def _study(self) -> optuna.Study:
        directions: list[Literal["minimize", "maximize"]] = (
            ["minimize", "minimize"] if self.s.multi_objective else
            ["maximize" if direction(self.s.objective) == "maximize" else "minimize"])
        try:
            study = retry_schema_race(lambda: optuna.create_study(
                study_name=self.s.study, storage=self.s.storage, load_if_exists=True,
                directions=directions, sampler=make_sampler(self.s.sampler, self.s.seed),
                pruner=make_pruner("none" if self.throughput else self.s.pruner,
                                   self.max_epochs)), what="--storage", url=self.s.storage)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"study {self.s.study!r} in {mask_url(self.s.storage)}: {exc}") from None
        if [d.name.lower() for d in study.directions] != directions:
            raise ConfigError(f"study {self.s.study!r} exists with directions "
                              f"{[d.name.lower() for d in study.directions]}; relaunch it with "
                              "the same --objective and --multi-objective settings")
        study.set_user_attr("space", str(self.s.space))
        study.set_user_attr("space_name", self.space.name)
        study.set_user_attr("objective", self.s.objective)
        study.set_user_attr("target_accuracy", self.base.get("target_accuracy"))
        study.set_user_attr("data_root", str(self.s.data_root))
        split = (self.base.get("data") or {}).get("split") or {}
        study.set_user_attr("split", split.get("protocol", "random"))
        study.set_user_attr("tracking_uri", mask_url(self.s.tracking_uri))
        return study

    def _counted(self, study: optuna.Study) -> int:
        """Trials that count toward ``--trials``: launched and finished (infeasible samples and
        trials orphaned by a killed driver are recorded but do not use up the budget)."""
        return sum(1 for t in study.get_trials(deepcopy=False)
                   if t.state.is_finished() and not t.user_attrs.get("stale")
                   and t.user_attrs.get("state") != "INFEASIBLE")

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> optuna.Study:
        self.started = time.time()  # --timeout counts from here: set-up time is study time
        n_train = self._n_train()
        # drivers starting together on new databases take turns creating the schemas
        with schema_lock([("--storage", self.s.storage), ("--tracking-uri", self.s.tracking_uri)]):
            study = self._study()
            tracker = Tracker(self.s.tracking_uri, self.s.study,
                              artifact_root=self.s.workdir / "mlartifacts", warn=self.log)
            parent, existed = tracker.parent(self.s.study)
        if parent.run_id is not None:
            study.set_user_attr("mlflow_parent_run_id", parent.run_id)
        settings_yaml = yaml.safe_dump(self.s.describe(), sort_keys=False)
        if existed:
            parent.log_text(settings_yaml, f"resumes/study-{int(time.time())}.yaml")
        else:
            parent.log_params({f"study.{k}": v for k, v in self.s.describe().items()})
            parent.log_text(settings_yaml, "study.yaml")
            parent.log_files([self.s.space])

        def end_stale_run(frozen: optuna.trial.FrozenTrial, reason: str) -> None:
            run_id = frozen.user_attrs.get("mlflow_run_id")
            if run_id:
                rec = tracker.recorder(str(run_id))
                rec.set_tags({"reason": reason})
                rec.end("FAILED")
            self.log(f"trial {frozen.number}: marked FAILED ({reason})")

        stale = recover_stale(study, stale_after_s=self.s.stale_after_s,
                              retry=self.s.retry_stale, on_stale=end_stale_run)
        if stale:
            self.log(f"resumed study {self.s.study!r}: {len(stale)} stale trial(s) "
                     f"{stale} marked FAILED{' and re-queued' if self.s.retry_stale else ''}")
        backfill_mlflow(study, tracker, parent, self.log)
        self.progress.total = self.s.trials
        self._show_best(study)
        self._loop(study, tracker, parent, n_train)
        parent.end("COMPLETED")
        return study

    def _loop(self, study: optuna.Study, tracker: Tracker, parent: RunRecorder,
              n_train: int) -> None:
        """Keep up to ``concurrent_trials`` trials running on disjoint host slices."""
        pool = HostPool(self.s.hosts)
        concurrency = self.s.concurrent_trials or pool.size
        active: list[_Active] = []
        waiting: _Asked | None = None  # asked and planned, waiting for free nodes
        started = self.started
        beat = time.time()
        infeasible_run = 0
        try:
            while True:
                for a in list(active):
                    outcome = self._poll(a)
                    if outcome is None:
                        continue
                    active.remove(a)
                    pool.release(a.hosts)
                    self._finish(study, a.trial, a.run, outcome, a.job)
                    self._show_best(study, parent)
                if time.time() - beat > HEARTBEAT_S:
                    for a in active:
                        a.trial.set_user_attr("heartbeat", time.time())
                    beat = time.time()
                room = waiting is None and len(active) < concurrency
                # (the stop check reads every trial: only when a trial could start or none runs)
                stop = self._stop_reason(study, started, len(active) + (waiting is not None)) \
                    if room or not active else "wait"
                if room and stop is None:
                    asked = self._ask(study, tracker, parent, n_train)
                    if isinstance(asked, str):
                        infeasible_run += 1
                        if infeasible_run >= self.s.max_infeasible_in_a_row:
                            raise ConfigError(
                                f"{infeasible_run} samples in a row were infeasible on "
                                f"{pool.size} host(s) with {self.s.hosts[0].cores} cores; the "
                                f"last: {asked}. Narrow the layout dimensions of {self.s.space}")
                        continue
                    infeasible_run = 0
                    waiting = asked
                if waiting is not None:
                    hosts = pool.acquire(int(waiting.plan.derived["nodes"]))
                    if hosts is not None:
                        asked, waiting = waiting, None  # _launch records it whatever happens
                        try:
                            active.append(self._launch(study, asked, hosts))
                        except BaseException:
                            pool.release(hosts)
                            raise
                        continue
                if not active and waiting is None and stop not in (None, "wait"):
                    if stop != "done":
                        self.log(stop)
                    return
                time.sleep(0.5)
        except BaseException:
            for a in active:
                a.job.cancel()
                pool.release(a.hosts)
                self._interrupted(study, a.trial, a.run)
            if waiting is not None:
                self._interrupted(study, waiting.trial, waiting.run)
            parent.end("CANCELLED")
            raise

    def _stop_reason(self, study: optuna.Study, started: float, mine: int) -> str | None:
        """None: ask another trial; "wait": enough are running; else why the study is over."""
        counted = self._counted(study)
        if counted >= self.s.trials:
            return "done"
        if self.s.timeout_s is not None and time.time() - started > self.s.timeout_s:
            return f"study timeout ({self.s.timeout_s:g}s) reached"
        if self.s.budget_node_s is not None and spent_node_s(study) >= self.s.budget_node_s:
            return f"compute budget ({self.s.budget_node_s / 3600:.4g} node-hours) spent"
        # other drivers' live trials count too, so N drivers do not run N × --trials
        others = running_elsewhere(study, self.s.stale_after_s)
        if counted + mine + others >= self.s.trials:
            return "wait" if mine or others else "done"
        return None

    def _show_best(self, study: optuna.Study, parent: RunRecorder | None = None) -> None:
        best = best_trial(study)
        if best is None:
            return
        tta = best.user_attrs.get("tta_s")
        if self.throughput:
            self.progress.set_best(f"{best.values[0]:.1f} img/s (trial {best.number})")
        else:
            self.progress.set_best(f"{tta:.1f}s (trial {best.number})" if tta is not None
                                   else f"not reached (trial {best.number})")
        if parent is not None:
            parent.set_tags({"best_trial": best.number,
                             "best_run_id": best.user_attrs.get("mlflow_run_id", ""),
                             "best_config": yaml.safe_dump(best.user_attrs.get("config", {}))})
            parent.log_metrics({"best_value": best.values[0], "best_tta_s": tta},
                               step=best.number)

    def _ask(self, study: optuna.Study, tracker: Tracker, parent: RunRecorder,
             n_train: int) -> _Asked | str:
        """Ask and plan one trial; an infeasible one is recorded at once and its reason returned."""
        trial = study.ask()
        number = trial.number
        try:
            params = sample_params(self.space, trial)
            plan = build_plan(self.space, params, data_root=self.s.data_root, n_train=n_train,
                              hosts=self.s.hosts, overrides=self.overrides)
        except (ConfigError, ValueError) as exc:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise ConfigError(f"trial {number}: the space {self.s.space} produced an invalid "
                              f"config: {exc}") from None
        for key, value in plan.constraints.items():
            trial.set_constraint(key, value)
        name = run_name(number, plan)
        attrs: dict[str, Any] = {"config": plan.config, "derived": plan.derived,
                                 "driver": driver_identity(), "heartbeat": time.time(),
                                 "run_name": name}
        for key, attr in attrs.items():
            trial.set_user_attr(key, attr)
        run = tracker.child(parent.run_id, name,
                            {"optuna.trial": number, "mcnn.study": self.s.study})
        if run.run_id is not None:
            trial.set_user_attr("mlflow_run_id", run.run_id)
        run.log_params({**plan.params, **plan.derived})
        run.log_text(yaml.safe_dump(plan.config, sort_keys=False), "config.yaml")
        if not plan.feasible:
            self._finish(study, trial, run, TrialOutcome("INFEASIBLE", plan.reason), None)
            return plan.reason
        return _Asked(trial, plan, run)

    def _launch(self, study: optuna.Study, asked: _Asked, hosts: list[HostInfo]) -> _Active:
        trial, run = asked.trial, asked.run
        plan = place(asked.plan, hosts)
        if len(self.s.hosts) > 1:  # the slice it got: config and params tell where it ran
            trial.set_user_attr("config", plan.config)
            trial.set_user_attr("derived", plan.derived)
        workdir = self.s.workdir / f"trial-{trial.number:04d}"
        assert plan.resources is not None
        resources = dataclasses.replace(plan.resources, timeout_s=self.s.trial_timeout_s,
                                        mca={**plan.resources.mca, **self.s.mca})
        job: Job | None = None
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            config_path = workdir / "config.yaml"
            config_path.write_text(yaml.safe_dump(plan.config, sort_keys=False))
            job = self.launcher.launch(config_path.resolve(), resources, workdir=workdir)
            trial.set_user_attr("job", {"pid": job.pid, "workdir": str(job.log_path.parent),
                                        "host": socket.gethostname()})
            trial.set_user_attr("argv", job.argv)
        except OSError as exc:  # an unwritable or full workdir: this trial fails, loudly
            self._finish(study, trial, run, TrialOutcome(
                "FAILED", f"cannot start the trial in {workdir}: {exc.strerror or exc}"), None)
            raise LaunchError(f"cannot start trials under {self.s.workdir}: "
                              f"{exc.strerror or exc}") from None
        except LaunchError:
            run.set_tags({"reason": "launch error"})
            run.end("FAILED")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        except BaseException:
            if job is not None:
                job.cancel()
            self._interrupted(study, trial, run)
            raise
        assert job.events_path is not None
        self.progress.update(self._counted(study), trial.number, None, None,
                             f"{plan.derived['world_size']} ranks × "
                             f"{plan.config['intra_op_threads']} threads, batch "
                             f"{plan.derived['global_batch']}"
                             + (f" on {plan.derived['hosts']}" if len(self.s.hosts) > 1 else ""))
        return _Active(trial, plan, run, job, hosts, EventTail(job.events_path),
                       last_event=time.time(), done=self._counted(study))

    def _poll(self, a: _Active) -> TrialOutcome | None:
        """Follow one running trial: log epochs, report, prune, detect a stall; its outcome once
        it has ended (None while it runs)."""
        finished = a.job.poll().finished
        for event in a.tail.poll():
            a.events.append(event)
            a.last_event = time.time()
            if event.get("event") != "epoch":
                continue
            a.run.log_epoch(event)
            acc = event.get("val_accuracy")
            self.progress.update(a.done, a.trial.number, int(event["epoch"]), acc)
            if acc is None:
                continue
            a.trial.report(intermediate_value(float(acc)), int(event["epoch"]))
            if not finished and a.trial.should_prune():
                a.job.cancel()
                a.events += a.tail.poll()
                return self._outcome(a, pruned=True)
        if finished:
            return self._outcome(a, pruned=False)
        silent = time.time() - a.last_event
        if self.s.stall_timeout_s is not None and silent > self.s.stall_timeout_s:
            a.job.cancel()
            a.events += a.tail.poll()
            outcome = self._outcome(a, pruned=False)
            return dataclasses.replace(outcome, state="FAILED", reason=(
                f"stalled: no progress for {silent:.0f}s (--stall-timeout "
                f"{self.s.stall_timeout_s:g}s); a rank is hung or lost"))
        return None

    def _outcome(self, a: _Active, *, pruned: bool) -> TrialOutcome:
        outcome = outcome_from_events(a.events, a.job.state, a.job.returncode, pruned=pruned,
                                      nodes=len(a.hosts), wall_s=time.time() - a.job.started)
        if outcome.state != "FAILED" or any(e.get("event") == "failed" for e in a.events):
            return outcome
        killed = killed_rank(a.job.log_tail(200))
        if killed:
            return dataclasses.replace(outcome, reason=killed)
        if a.job.returncode == 4:  # explorer.mcnn.train.EXIT_IO: it could not write its events
            return dataclasses.replace(outcome, reason=io_reason(a.job.log_path.parent))
        return outcome

    def _interrupted(self, study: optuna.Study, trial: optuna.Trial, run: RunRecorder) -> None:
        run.set_tags({"reason": "interrupted"})
        run.end("FAILED")
        trial.set_user_attr("reason", "interrupted: the driver was stopped")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def _finish(self, study: optuna.Study, trial: optuna.Trial, run: RunRecorder,
                outcome: TrialOutcome, job: Job | None) -> None:
        final: dict[str, float | None] = {
            "tta_s": outcome.tta_s, "startup_s": outcome.startup_s,
            "tta_wall_s": outcome.tta_wall_s, "best_val_accuracy": outcome.best_val_accuracy,
            "median_images_per_sec": outcome.images_per_sec, "node_hours": outcome.node_hours,
            "wall_s": outcome.wall_s, "epochs": outcome.epochs}
        run.log_metrics(final)
        run.set_tags({"reason": outcome.reason})
        for key, value in {**final, "state": outcome.state, "reason": outcome.reason}.items():
            trial.set_user_attr(key, value)
        if job is not None:
            tail = job.log_tail(60)
            run.log_text(tail, "log_tail.txt")
            if outcome.state not in ("COMPLETED", "PRUNED"):
                trial.set_user_attr("log_tail", tail[-2000:])
            run.log_files([job.log_path.parent / "argv.txt", job.log_path.parent / "config.yaml"])
            if job.events_path is not None:
                run.log_files([job.events_path])
        run.end(outcome.state)
        state = _TELL_STATE.get(outcome.state, optuna.trial.TrialState.FAIL)
        if state is optuna.trial.TrialState.COMPLETE:
            values = objective_values(outcome, objective=self.s.objective,
                                      multi_objective=self.s.multi_objective)
            study.tell(trial, values)
        else:
            study.tell(trial, state=state)
        tta = "-" if outcome.tta_s is None else f"{outcome.tta_s:.1f}s"
        self.log(f"trial {trial.number}: {outcome.state} ({outcome.reason}) TTA {tta}, best "
                 f"val acc {outcome.best_val_accuracy:.3f}, {outcome.epochs} epochs, "
                 f"wall {outcome.wall_s:.0f}s")
        if outcome.state == "FAILED" and job is not None:
            self.log("  log tail:\n    " + "\n    ".join(job.log_tail(8).splitlines()))


def run_name(number: int, plan: TrialPlan) -> str:
    """A run name that reads well in the MLflow UI: ``trial-007 np=2x1 bs=16 lr=0.008;2;…``."""
    layout = plan.config.get("layout") or {}
    lr = str(plan.derived.get("piecewise", ""))
    lr = lr if len(lr) <= 24 else lr[:23] + "…"
    nodes = plan.derived.get("nodes", 1)
    where = f"{nodes}n×" if nodes != 1 else ""
    return (f"trial-{number:03d} np={where}{layout.get('ranks_per_node', 1)}x"
            f"{layout.get('threads_per_rank', 1)} bs={plan.derived.get('global_batch')} lr={lr}")


def spent_node_s(study: optuna.Study) -> float:
    """Compute the study's trials have used: job wall seconds × nodes, summed."""
    total = 0.0
    for t in study.get_trials(deepcopy=False):
        derived = t.user_attrs.get("derived") or {}
        total += float(t.user_attrs.get("wall_s") or 0.0) * int(derived.get("nodes", 1))
    return total


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best completed, feasible trial (lowest TTA on the Pareto front when multi-objective)."""
    try:
        if len(study.directions) == 1:
            return study.best_trial
        front = study.best_trials
    except ValueError:
        return None
    return min(front, key=lambda t: t.values[0]) if front else None


__all__ += ["best_trial", "make_pruner", "make_sampler", "run_name", "spent_node_s"]


@dataclass
class _Asked:
    """A trial asked and planned, not yet launched (it may wait for free nodes)."""

    trial: optuna.Trial
    plan: TrialPlan
    run: RunRecorder


@dataclass
class _Active:
    """A launched trial the loop is following."""

    trial: optuna.Trial
    plan: TrialPlan
    run: RunRecorder
    job: Job
    hosts: list[HostInfo]
    tail: EventTail
    last_event: float
    done: int
    events: list[dict[str, Any]] = field(default_factory=list)


_SIGNALLED = re.compile(r"process rank (\d+) with PID \d+ on node (\S+) exited on signal "
                        r"(\d+)(?: \(([^)]*)\))?")


def killed_rank(log: str) -> str | None:
    """A reason from Open MPI's report of a rank that died on a signal (e.g. SIGKILL)."""
    found = _SIGNALLED.search(log)
    if found is None:
        return None
    rank, node, sig, name = found.groups()
    return (f"rank {rank} on {node} was killed by signal {sig}"
            f"{f' ({name})' if name else ''}; mpirun ended the job")


def io_reason(folder: Path) -> str:
    """Why a job could not write its events in ``folder`` (its exit code 4)."""
    try:
        full = shutil.disk_usage(folder).free < 64 * 1024
    except OSError:
        full = False
    why = "No space left on device" if full else "the folder is not writable"
    return f"io_error: the job could not write its events in {folder}: {why}"


def running_elsewhere(study: optuna.Study, stale_after_s: float) -> int:
    """Live RUNNING trials of other drivers (a stale one does not count)."""
    me = (socket.gethostname(), os.getpid())
    now, count = time.time(), 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        driver = t.user_attrs.get("driver") or {}
        if (driver.get("host"), driver.get("pid")) == me:
            continue
        if stale_reason(t, now=now, stale_after_s=stale_after_s) is None:
            count += 1
    return count


def backfill_mlflow(study: optuna.Study, tracker: Tracker, parent: RunRecorder,
                    log: Callable[[str], None]) -> int:
    """Give every finished trial its complete MLflow child run (after the store was down).

    A trial finished while the store was unavailable has no run, or one that was never ended;
    it is rebuilt from Optuna (params, derived values, final metrics, reason) and its trial folder
    (per-epoch metrics from ``events.jsonl``, ``config.yaml``, ``argv.txt``). Returns the count.
    """
    if tracker.down is not None or parent.run_id is None:
        return 0
    runs = tracker.trial_runs(parent.run_id)
    filled = 0
    for t in study.get_trials(deepcopy=False):
        if not t.state.is_finished() or tracker.down is not None:
            continue
        run = runs.get(t.number)
        if run is not None and run.data.tags.get("state"):
            continue
        if run is None:
            rec = tracker.child(parent.run_id, str(t.user_attrs.get("run_name")
                                                  or f"trial-{t.number:03d}"),
                                {"optuna.trial": t.number, "mcnn.study": study.study_name,
                                 "mcnn.backfilled": "true"})
            rec.log_params({**t.params, **(t.user_attrs.get("derived") or {})})
            if t.user_attrs.get("config"):
                rec.log_text(yaml.safe_dump(t.user_attrs["config"], sort_keys=False),
                             "config.yaml")
        else:
            rec = tracker.recorder(run.info.run_id)
        folder = Path(str((t.user_attrs.get("job") or {}).get("workdir", "")))
        events_path = folder / "events.jsonl"
        if events_path.is_file() and (run is None or not run.data.metrics):
            for line in events_path.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("event") == "epoch":
                    rec.log_epoch(event)
        if str(folder) not in ("", "."):
            rec.log_files([folder / "config.yaml", folder / "argv.txt", events_path])
        keys = ("tta_s", "startup_s", "tta_wall_s", "best_val_accuracy",
                "median_images_per_sec", "node_hours", "wall_s", "epochs")
        rec.log_metrics({k: t.user_attrs.get(k) for k in keys})
        state = str(t.user_attrs.get("state") or {"COMPLETE": "COMPLETED", "PRUNED": "PRUNED"}
                    .get(t.state.name, "FAILED"))
        rec.set_tags({"reason": t.user_attrs.get("reason", "recorded while MLflow was down")})
        rec.end(state)
        if tracker.down is None:
            filled += 1
    if filled:
        log(f"back-filled {filled} MLflow run(s) of trials finished while the store was "
            "unavailable")
    return filled


__all__ += ["backfill_mlflow", "io_reason", "killed_rank", "running_elsewhere"]

