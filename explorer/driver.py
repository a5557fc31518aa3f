"""The study loop: ask → plan → place → launch → follow → finish, until the study is done.

Trials never share a node (that would corrupt their timings): on one machine they run one at a
time; on a pool of H hosts up to ``concurrent_trials`` (default H) run at once, each on a disjoint
slice (:class:`explorer.pool.HostPool`). Several drivers may share one study (an RDB storage such
as PostgreSQL): Optuna hands each ``ask`` a distinct trial, and each driver counts the others'
live trials against ``--trials``. A failing trial — crash, NaN, a killed or hung rank, timeout,
a launcher error — is recorded and the study goes on.

The loop owns no I/O of its own: set-up is :mod:`explorer.study`, data preparation
:mod:`explorer.prepare`, every write to Optuna and MLflow :class:`explorer.recorder.Recorder`, and
the classification of a finished job :mod:`explorer.outcome`. It reads time only from its
:class:`~explorer.clock.Clock` and starts jobs only through its
:class:`~launchers.base.Launcher`, so a simulated launcher and clock drive the same loop.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import yaml

from explorer.clock import Clock, SystemClock
from explorer.hardware import with_hardware
from explorer.mcnn.events import EventTail
from explorer.objective import TrialOutcome, intermediate_value
from explorer.outcome import classify
from explorer.pool import (
    NODE_CHECK_S,
    NODE_RETRY_S,
    HostPool,
    NodeProbe,
    slurm_probe,
    unreachable,
)
from explorer.prepare import prepare_shards
from explorer.progress import ProgressLine, duration
from explorer.record import Outcome, TrialRecord, set_attrs
from explorer.recorder import Recorder
from explorer.schema import schema_lock
from explorer.stale import driver_identity, recover_stale, requeue
from explorer.study import (
    PRUNE_RESOURCE,
    StudySettings,
    best_record,
    check_sampler,
    counted,
    open_study,
    running_elsewhere,
    spent_node_s,
    storage_outage,
)
from explorer.tracking import RunRecorder
from explorer.values import queue_fixed, trial_values
from launchers.base import JobHandle, Launcher
from launchers.hosts import HostInfo
from mcnn_base.errors import ConfigError, LaunchError
from mcnn_base.urls import mask_url
from search_spaces.baseline import base_differences, load_baseline
from search_spaces.plan import TrialPlan, build_plan, deep_merge, place
from search_spaces.space import SearchSpace, load_space

__all__ = ["Next", "StudyDriver"]

HEARTBEAT_S = 15.0
QUARANTINE_ATTR = "quarantined_hosts"  # study user attribute: host -> why
CLOCK_EVERY_S = 5.0  # the live line's study clock is refreshed this often

POLL_S = 0.5
STORAGE_RETRY_S = 5.0  # a storage that does not answer is tried again this often ...
# ... for this long; then the driver stops its trials (under the 300 s after which other drivers
# take a trial without heartbeat for stale)
STORAGE_PATIENCE_S = 240.0

# (base config, settings, log) -> training images: builds the shard cache (a child process)
Prepare = Callable[[dict[str, Any], StudySettings, Callable[[str], None]], int]


def _prepare(base: dict[str, Any], s: StudySettings, log: Callable[[str], None]) -> int:
    return prepare_shards(base, source=s.space, data_root=s.data_root, workdir=s.workdir,
                          timeout_s=s.prepare_timeout_s, log=log)


class Next(enum.Enum):
    """What the loop does next, as decided by :meth:`StudyDriver._next`."""

    ASK = "ask"  # room for another trial, and the study wants one
    WAIT = "wait"  # enough trials are running (here or on other drivers)
    DONE = "done"  # --trials finished trials are recorded
    TIMEOUT = "timeout"  # --timeout reached
    BUDGET = "budget"  # --budget-node-hours spent


@dataclass
class _Asked:
    """A trial asked and planned, not yet launched (it may wait for free nodes)."""

    trial: optuna.Trial
    plan: TrialPlan
    run: RunRecorder


@dataclass
class _Active:
    """A launched trial the loop is following."""

    asked: _Asked
    job: JobHandle
    hosts: list[HostInfo]
    tail: EventTail
    last_event: float
    done: int
    events: list[dict[str, Any]] = field(default_factory=list)
    reports: int = 0  # intermediate values reported to the pruner
    last_step: int = 0  # the last one's step
    outcome: TrialOutcome | None = None  # once it has ended, until it is recorded
    unreported: list[dict[str, Any]] = field(default_factory=list)  # epochs not yet reported
    reported: set[int] = field(default_factory=set)  # (ids of) those told to the pruner


class _Step(enum.Enum):
    """What the loop does after a pass."""

    AGAIN = "again"  # at once (a trial was asked or launched)
    WAIT = "wait"  # after POLL_S
    DONE = "done"


@dataclass
class _LoopState:
    """What the loop carries from one pass to the next."""

    pool: HostPool
    concurrency: int
    beat: float
    shown: float
    next_check: float
    active: list[_Active] = field(default_factory=list)
    waiting: _Asked | None = None  # asked and planned, waiting for free nodes
    infeasible_run: int = 0
    checked: float = -math.inf  # when the node probe last ran


class StudyDriver:
    """Runs a study to ``settings.trials`` finished trials (resuming an existing one)."""

    def __init__(self, settings: StudySettings, launcher: Launcher, *,
                 progress: ProgressLine | None = None, log: Callable[[str], None] | None = None,
                 clock: Clock | None = None, prepare: Prepare = _prepare,
                 node_probe: NodeProbe | None = None) -> None:
        self.s = settings
        self.launcher = launcher
        self.node_probe = node_probe if node_probe is not None else slurm_probe()
        self.clock: Clock = clock or SystemClock()
        self.prepare = prepare
        check_sampler(settings.sampler)
        self.space: SearchSpace = load_space(settings.space)
        self.progress = progress or ProgressLine(settings.trials)
        self.log = log or self.progress.message
        self.overrides = dict(settings.overrides)
        if settings.throughput:
            if settings.multi_objective:
                raise ConfigError("--objective images_per_sec is single-objective; drop "
                                  "--multi-objective")
            # a layout study: warm-up then timed epochs, no evaluation, no target
            self.overrides.update({"eval": False, "target_accuracy": None})
        elif settings.target_accuracy is not None:
            self.overrides["target_accuracy"] = settings.target_accuracy
        base = deep_merge(self.space.base, {"data": {"root": str(settings.data_root)}})
        merged = deep_merge(base, self.overrides)
        if merged.get("target_accuracy") is None and not settings.throughput:
            raise ConfigError("a study needs a target accuracy: pass --target-accuracy or set "
                              f"target_accuracy in the base of {settings.space}")
        self.max_epochs = float(merged.get("max_epochs", 20.0))
        target = merged.get("target_accuracy")
        self.target = float(target) if target is not None else math.inf  # none: never reached
        self.base = merged
        self.started = self.clock.now()
        self.rec: Recorder | None = None
        self._limbo: list[optuna.Trial] = []  # asked as the storage went away (see _ask)

    # -- set-up -----------------------------------------------------------------------------
    def run(self) -> optuna.Study:
        self.started = self.clock.now()  # --timeout counts from here: set-up time is study time
        n_train = self.prepare(self.base, self.s, self.log)
        # a baseline that cannot run on this pool and split fails here, before any write
        baseline = (load_baseline(self.s.baseline, self.space, self.s.hosts, n_train)
                    if self.s.baseline else None)
        differs = base_differences(baseline, self.space) if baseline and \
            self.s.baseline != "seed" else []
        if differs:
            self.log(f"note: baseline {self.s.baseline} runs with its own values where the "
                     f"space's base sets others for every trial: {'; '.join(differs)}")
        split = (self.base.get("data") or {}).get("split") or {}
        attrs = {"space": str(self.s.space.resolve()), "space_name": self.space.name,
                 "objective": self.s.objective, "target_accuracy": self.base.get("target_accuracy"),
                 "data_root": str(self.s.data_root), "split": split.get("protocol", "random"),
                 "tracking_uri": mask_url(self.s.tracking_uri)}
        # drivers starting together on new databases take turns creating each schema (one
        # lock at a time, never nested: the two stores may be one database)
        with schema_lock([("--storage", self.s.storage)]):
            study, storage = open_study(self.s, max_epochs=self.max_epochs, attrs=attrs)
        # the hosts' ISA flags and memory (read once per pool through the launcher; cached)
        self.s = dataclasses.replace(self.s, hosts=with_hardware(
            study, self.s.hosts, self.launcher, self.s.mca, self.log))
        with schema_lock([("--tracking-uri", self.s.tracking_uri)]):
            rec = self.rec = Recorder.open(self.s, study, self.log)
        stale = recover_stale(study, storage, stale_after_s=self.s.stale_after_s,
                              retry=self.s.retry_stale, on_stale=rec.stale)
        if stale:
            self.log(f"resumed study {self.s.study!r}: {len(stale)} stale trial(s) "
                     f"{stale} marked FAILED{' and re-queued' if self.s.retry_stale else ''}")
        rec.backfill(study)
        queue_fixed(study, self.space, baseline=baseline, strategy=self.s.strategy,
                    hosts=self.s.hosts, n_train=n_train, data_root=self.s.data_root,
                    log=self.log, allow_emulated_bf16=self.s.allow_emulated_bf16)
        self.progress.total = self.s.trials
        self._show_best(study, tag=False)
        self._loop(study, rec, n_train)
        rec.end(finished=True)
        return study

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self, study: optuna.Study, rec: Recorder, n_train: int) -> None:
        """Keep up to ``concurrent_trials`` trials running on disjoint host slices.

        A storage that stops answering (a database restart, a dropped connection) pauses the
        loop, not the trials: the pass is run again every :data:`STORAGE_RETRY_S` until it
        answers (every storage write of a pass is safe to repeat, and a finished trial keeps
        its outcome until it is recorded), for at most :data:`STORAGE_PATIENCE_S`; then the
        driver stops its trials and exits, and a relaunch re-queues them.
        """
        pool = HostPool(self.s.hosts)
        pool.quarantine(study.user_attrs.get(QUARANTINE_ATTR) or {})  # a resumed study's
        loop = _LoopState(pool=pool, concurrency=self.s.concurrent_trials or pool.size,
                          beat=self.clock.now(), shown=self.clock.now(),
                          next_check=self.clock.now())
        self._show_clock(study, loop.active)
        outage: float | None = None  # when the storage stopped answering
        try:
            while True:
                try:
                    if self._limbo:
                        self._settle_limbo(study, rec)
                    step = self._step(study, rec, loop, n_train)
                except Exception as exc:
                    if not storage_outage(exc):
                        raise
                    outage = self._outage(outage, exc)
                    self.clock.sleep(STORAGE_RETRY_S)
                    continue
                if outage is not None:
                    self.log(f"the Optuna storage answers again after "
                             f"{duration(self.clock.now() - outage)}; the study goes on")
                    outage = None
                if step is _Step.DONE:
                    return
                if step is _Step.WAIT:
                    self.clock.sleep(POLL_S)
        except BaseException:
            self._stop(study, rec, loop)
            raise

    def _step(self, study: optuna.Study, rec: Recorder, loop: _LoopState,
              n_train: int) -> _Step:
        """One pass of the loop (see :meth:`_loop`)."""
        pool, active = loop.pool, loop.active
        # follow: log epochs, report, prune, detect stalls; finish what has ended
        for a in list(active):
            if a.outcome is None:  # (set: its recording waited for the storage)
                outcome = self._follow(a)
                if outcome is None:
                    continue
                if outcome.state is Outcome.FAILED and len(self.s.hosts) > 1:
                    outcome = self._check_hosts(pool, a, outcome)
                if (a.asked.trial.user_attrs.get("stage") == 1
                        and outcome.state is Outcome.COMPLETED):
                    outcome = dataclasses.replace(
                        outcome, state=Outcome.MEASURED, reason=(
                            f"layout measurement: {outcome.images_per_sec or 0.0:.1f} "
                            "images/s (steady state)"))
                a.outcome = outcome
            if pool.quarantined and study.user_attrs.get(QUARANTINE_ATTR) != pool.quarantined:
                study.set_user_attr(QUARANTINE_ATTR, dict(pool.quarantined))
            rec.finish(study, a.asked.trial, a.asked.run, a.outcome, a.job)
            active.remove(a)
            pool.release(a.hosts)
            self._show_best(study)
        now = self.clock.now()
        if now - loop.beat > HEARTBEAT_S:
            for a in active:
                set_attrs(a.asked.trial, heartbeat=now)
            loop.beat = now
        if now - loop.shown >= CLOCK_EVERY_S:
            self._show_clock(study, active)
            loop.shown = now
        if self.node_probe is not None and now >= loop.next_check:
            loop.next_check = now + self._check_nodes(study, pool)
            loop.checked = now
        room = loop.waiting is None and len(active) < loop.concurrency
        # (deciding reads every trial: only when a trial could start or none runs)
        nxt = (self._next(study, len(active) + (loop.waiting is not None))
               if room or not active else Next.WAIT)
        # ask + plan
        if room and nxt is Next.ASK:
            asked = self._ask(study, rec, n_train)
            if isinstance(asked, str):
                loop.infeasible_run += 1
                if loop.infeasible_run >= self.s.max_infeasible_in_a_row:
                    raise ConfigError(
                        f"{loop.infeasible_run} samples in a row were infeasible on "
                        f"{pool.size} host(s) with {self.s.hosts[0].cores} cores; the "
                        f"last: {asked}. Narrow the layout dimensions of {self.s.space}")
                return _Step.AGAIN
            loop.infeasible_run = 0
            loop.waiting = asked
        # place + launch
        if loop.waiting is not None:
            need = int(loop.waiting.plan.derived["nodes"])
            if (self.node_probe is not None and len(pool.free) >= need
                    and self.clock.now() - loop.checked > 1.0):
                # about to place a trial: node states as of now, not as of the last check
                loop.next_check = self.clock.now() + self._check_nodes(study, pool)
                loop.checked = self.clock.now()
            hosts = pool.acquire(need)
            if hosts is not None:
                asked, loop.waiting = loop.waiting, None  # _launch records it whatever happens
                try:
                    active.append(self._launch(study, rec, asked, hosts))
                except BaseException:
                    pool.release(hosts)
                    raise
                return _Step.AGAIN
            if need > pool.usable:  # quarantine left too few hosts: it would wait forever
                rec.failed_to_start(study, loop.waiting.trial, loop.waiting.run,
                                    f"needs {need} node(s); {pool.usable} of the pool's "
                                    f"{pool.size} are left after quarantine")
                loop.waiting = None
            elif not active and nxt in (Next.TIMEOUT, Next.BUDGET):
                # it waited for nodes that never came (e.g. drained): it never ran
                rec.failed_to_start(study, loop.waiting.trial, loop.waiting.run, "no free node "
                                    f"before the study ended ({self._why_stopped(nxt)})")
                loop.waiting = None
        if not active and loop.waiting is None and nxt not in (Next.ASK, Next.WAIT):
            if nxt is not Next.DONE:
                self.log(self._why_stopped(nxt))
            return _Step.DONE
        return _Step.WAIT

    def _outage(self, since: float | None, exc: BaseException) -> float:
        """Log a storage outage once (and give up after :data:`STORAGE_PATIENCE_S`)."""
        now = self.clock.now()
        if since is None:
            cause = exc.__cause__ or exc
            self.log(f"the Optuna storage {mask_url(self.s.storage)} does not answer "
                     f"({str(cause).splitlines()[0][:160]}); running trials go on, retrying "
                     f"every {STORAGE_RETRY_S:g} s for up to {duration(STORAGE_PATIENCE_S)}")
            return now
        if now - since > STORAGE_PATIENCE_S:
            raise LaunchError(f"the Optuna storage {mask_url(self.s.storage)} has not answered "
                              f"for {duration(now - since)}; the running trials were stopped. "
                              "Relaunch the same command once it is back: they are re-queued")
        return since

    def _settle_limbo(self, study: optuna.Study, rec: Recorder) -> None:
        """Trials asked just as the storage went away (never launched, or stopped before they
        were followed): FAILED, their MLflow run (if one was started) ended, and queued again
        when they were fixed (a baseline, a confirmation, a layout measurement) or queued by
        the user, so that the storage's outage loses none of them."""
        while self._limbo:  # every step is safe to repeat (the storage may go away again)
            trial = self._limbo[0]
            frozen = study._storage.get_trial(trial._trial_id)
            if not frozen.state.is_finished():
                reason = ("the storage went away while the trial was being started; it never "
                          "ran (its job, if any, was stopped)")
                set_attrs(trial, state=Outcome.FAILED, reason=reason)
                rec.stale(TrialRecord.from_frozen(study._storage.get_trial(trial._trial_id)),
                          reason)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            retried = any(t.user_attrs.get("retry_of") == trial.number
                          for t in study.get_trials(deepcopy=False))
            if not retried and requeue(study, frozen, TrialRecord.from_frozen(frozen),
                                       sampled=False):
                self.log(f"trial {trial.number}: queued again")
            self._limbo.pop(0)

    def _stop(self, study: optuna.Study, rec: Recorder, loop: _LoopState) -> None:
        """The driver is stopping (Ctrl-C, an error, a lost storage): end every running job,
        and record it as interrupted where the storage still answers."""
        for a in loop.active:
            a.job.cancel()
            loop.pool.release(a.hosts)
        pending = [(a.asked.trial, a.asked.run) for a in loop.active if a.outcome is None]
        if loop.waiting is not None:
            pending.append((loop.waiting.trial, loop.waiting.run))
        try:
            for a in loop.active:
                if a.outcome is not None:  # it ended before the stop: its own result
                    rec.finish(study, a.asked.trial, a.asked.run, a.outcome, a.job)
            for trial, run in pending:
                rec.interrupted(study, trial, run)
            rec.end(finished=False)
        except Exception as exc:
            if not storage_outage(exc):
                raise
            # unrecorded: a relaunch finds them RUNNING with a dead driver and re-queues them

    def _show_clock(self, study: optuna.Study, active: list[_Active]) -> None:
        """Elapsed time, node-seconds spent (finished trials + the running ones so far) and what
        is left of --timeout or --budget-node-hours, on the live line."""
        now = self.clock.now()
        spent = spent_node_s(study) + sum((now - a.job.started) * len(a.hosts) for a in active)
        parts = [f"{duration(now - self.started)} elapsed", f"{spent:.0f} node-s"]
        if self.s.timeout_s is not None:
            parts.append(f"{duration(self.s.timeout_s - (now - self.started))} left")
        if self.s.budget_node_s is not None:
            parts.append(f"{max(0.0, self.s.budget_node_s - spent):.0f} node-s left")
        self.progress.set_status(", ".join(parts))

    def _next(self, study: optuna.Study, mine: int) -> Next:
        """Whether to ask another trial, wait, or end the study (and why)."""
        if self.s.only_queued:  # study confirm: run what is queued, sample nothing
            queued = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
            return Next.ASK if queued else Next.WAIT if mine else Next.DONE
        if self.s.strategy == "layout-first":  # stage 2 starts once stage 1 has ended
            stage1 = [t for t in study.get_trials(deepcopy=False, states=(
                optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING))
                if t.user_attrs.get("stage") == 1]
            if any(t.state is optuna.trial.TrialState.WAITING for t in stage1):
                return Next.ASK
            if stage1:
                return Next.WAIT
        done = counted(study)
        if done >= self.s.trials:
            return Next.DONE
        if self.s.timeout_s is not None and self.clock.now() - self.started > self.s.timeout_s:
            return Next.TIMEOUT
        if self.s.budget_node_s is not None and spent_node_s(study) >= self.s.budget_node_s:
            return Next.BUDGET
        # other drivers' live trials count too, so N drivers do not run N × --trials
        others = running_elsewhere(study, self.s.stale_after_s, self.clock.now())
        if done + mine + others >= self.s.trials:
            return Next.WAIT if mine or others else Next.DONE
        return Next.ASK

    def _check_nodes(self, study: optuna.Study, pool: HostPool) -> float:
        """Exclude the pool's hosts that SLURM will not give a job (drained, down, ...); the
        seconds until the next check."""
        assert self.node_probe is not None
        changed = pool.refresh(self.node_probe, self.log)
        if changed:
            study.set_user_attr("excluded_hosts", dict(pool.excluded))
        return NODE_CHECK_S if changed is not None else NODE_RETRY_S

    def _check_hosts(self, pool: HostPool, a: _Active,
                     outcome: TrialOutcome) -> TrialOutcome:
        """After a trial failed on a pool: quarantine the hosts of its slice that no longer run
        a process (a lost node, a cut network), and name them in its reason (the study keeps
        the quarantine: written before the trial is recorded)."""
        lost = unreachable([h.name for h in a.hosts], self.launcher, self.s.mca)
        if not lost:
            return outcome
        pool.quarantine(lost)
        for host, why in lost.items():
            self.log(f"host {host} quarantined for the rest of the study: {why}")
        named = "; ".join(f"host {h} unreachable ({why})" for h, why in lost.items())
        return dataclasses.replace(outcome, reason=f"{named}, quarantined; the trial: "
                                                   f"{outcome.reason}")

    def _why_stopped(self, nxt: Next) -> str:
        if nxt is Next.TIMEOUT:
            return f"study timeout ({self.s.timeout_s:g}s) reached"
        assert self.s.budget_node_s is not None
        return f"compute budget ({self.s.budget_node_s / 3600:.4g} node-hours) spent"

    def _ask(self, study: optuna.Study, rec: Recorder, n_train: int) -> _Asked | str:
        """Ask and plan one trial; an infeasible one is recorded at once and its reason returned."""
        trial = study.ask()
        try:
            try:
                values = trial_values(trial, study, self.space, strategy=self.s.strategy,
                                      overrides=self.overrides)
                plan = build_plan(self.space, values.params, data_root=self.s.data_root,
                                  n_train=n_train, hosts=self.s.hosts,
                                  overrides=values.overrides,
                                  allow_emulated_bf16=self.s.allow_emulated_bf16)
            except (ConfigError, ValueError) as exc:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise ConfigError(f"trial {trial.number}: the space {self.s.space} produced an "
                                  f"invalid config: {exc}") from None
            run = rec.start(trial, plan, driver=driver_identity(), heartbeat=self.clock.now())
            if values.missing is not None or not plan.feasible:
                reason = values.missing or plan.reason
                rec.finish(study, trial, run, TrialOutcome(Outcome.INFEASIBLE, reason), None)
                return reason
        except Exception as exc:
            if storage_outage(exc):  # asked, never planned: FAILED once the storage is back
                self._limbo.append(trial)
            raise
        return _Asked(trial, plan, run)

    def _launch(self, study: optuna.Study, rec: Recorder, asked: _Asked,
                hosts: list[HostInfo]) -> _Active:
        trial, run = asked.trial, asked.run
        plan = place(asked.plan, hosts)
        workdir = self.s.workdir / f"trial-{trial.number:04d}"
        assert plan.resources is not None
        resources = dataclasses.replace(plan.resources, timeout_s=self.s.trial_timeout_s,
                                        mca={**plan.resources.mca, **self.s.mca})
        job: JobHandle | None = None
        try:
            if len(self.s.hosts) > 1:  # the slice it got: config and params tell where it ran
                set_attrs(trial, config=plan.config, derived=plan.derived)
            workdir.mkdir(parents=True, exist_ok=True)
            config_path = workdir / "config.yaml"
            config_path.write_text(yaml.safe_dump(plan.config, sort_keys=False))
            job = self.launcher.launch(config_path.resolve(), resources, workdir=workdir)
            set_attrs(trial, job={"pid": job.pid, "workdir": str(job.log_path.parent),
                                  "host": socket.gethostname()}, argv=job.argv)
            done = counted(study)
        except OSError as exc:  # an unwritable or full workdir: this trial fails, loudly
            rec.finish(study, trial, run, TrialOutcome(
                Outcome.FAILED, f"cannot start the trial in {workdir}: {exc.strerror or exc}"),
                None)
            raise LaunchError(f"cannot start trials under {self.s.workdir}: "
                              f"{exc.strerror or exc}") from None
        except LaunchError:
            rec.failed_to_start(study, trial, run, "launch error")
            raise
        except BaseException as exc:
            if job is not None:
                job.cancel()
            if storage_outage(exc):  # stopped before it was followed: FAILED once it is back
                self._limbo.append(trial)
            else:
                rec.interrupted(study, trial, run)
            raise
        assert job.events_path is not None
        self.progress.update(done, trial.number, None, None,
                             f"{plan.derived['world_size']} ranks × "
                             f"{plan.config['intra_op_threads']} threads, batch "
                             f"{plan.derived['global_batch']}"
                             + (f" on {plan.derived['hosts']}" if len(self.s.hosts) > 1 else ""))
        return _Active(_Asked(trial, plan, run), job, hosts, EventTail(job.events_path),
                       last_event=self.clock.now(), done=done)

    def _follow(self, a: _Active) -> TrialOutcome | None:
        """Follow one running trial: log epochs, report, prune, detect a stall; its outcome once
        it has ended (None while it runs)."""
        trial = a.asked.trial
        finished = a.job.poll().finished
        new = a.tail.poll()
        if new:
            a.events += new
            a.unreported += [e for e in new if e.get("event") == "epoch"]
            a.last_event = self.clock.now()
        while a.unreported:  # (one the storage did not take stays here for the next pass)
            event = a.unreported[0]
            acc = event.get("val_accuracy")
            if acc is not None and not self.s.multi_objective:  # Optuna prunes one objective
                if id(event) not in a.reported:
                    if PRUNE_RESOURCE.get(self.s.pruner) == "evaluations":
                        step = a.reports + 1
                    else:  # whole training seconds on the TTA clock, strictly increasing
                        step = max(a.last_step + 1, int(float(event.get("elapsed_s") or 0.0)))
                    trial.report(intermediate_value(float(acc)), step)
                    a.reports, a.last_step = a.reports + 1, step
                    a.reported.add(id(event))
                # a job at the target or at its last evaluation ends by itself: never prune it
                last = float(event.get("epoch") or 0.0) >= self.max_epochs - 1e-6
                if (not finished and float(acc) < self.target and not last
                        and trial.should_prune()):
                    a.asked.run.log_epoch(event)
                    a.job.cancel()
                    later = {id(e) for e in a.unreported[1:]}  # after the prune: not its result
                    a.events = [e for e in a.events if id(e) not in later]
                    a.events += a.tail.poll()
                    return self._outcome(a, pruned=True)
            a.unreported.pop(0)
            a.asked.run.log_epoch(event)
            self.progress.update(a.done, trial.number, event.get("epoch"), acc)
        if finished:
            return self._outcome(a, pruned=False)
        silent = self.clock.now() - a.last_event
        if self.s.stall_timeout_s is not None and silent > self.s.stall_timeout_s:
            a.job.cancel()
            a.events += a.tail.poll()
            return dataclasses.replace(self._outcome(a, pruned=False), state=Outcome.FAILED,
                                       reason=(f"stalled: no progress for {silent:.0f}s "
                                               f"(--stall-timeout {self.s.stall_timeout_s:g}s); "
                                               "a rank is hung or lost"))
        return None

    def _outcome(self, a: _Active, *, pruned: bool) -> TrialOutcome:
        return classify(a.events, a.job, pruned=pruned, nodes=len(a.hosts),
                        wall_s=self.clock.now() - a.job.started)

    def _show_best(self, study: optuna.Study, *, tag: bool = True) -> None:
        """The best trial so far on the progress line (and, with ``tag``, on the parent run)."""
        assert self.rec is not None
        best = self.rec.best(study) if tag else best_record(study)
        if best is None or best.values is None:
            return
        if self.s.throughput:
            self.progress.set_best(f"{best.values[0]:.1f} img/s (trial {best.number})")
        else:
            self.progress.set_best(f"{best.tta_s:.1f}s (trial {best.number})"
                                   if best.tta_s is not None
                                   else f"not reached (trial {best.number})")

