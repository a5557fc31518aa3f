"""The study's objective: time-to-accuracy (docs/DESIGN.md §3), with a rule for trials that miss.

The value Optuna minimises for a finished trial is

* ``tta_s`` (or ``tta_wall_s = startup_s + tta_s`` with ``--objective tta_wall_s``) when the job
  reached the target accuracy;
* ``MISS_BASE × (2 − best_val_accuracy)`` when it did not: at least ``MISS_BASE`` = 10⁶ s
  (11.6 days, far above any trial timeout), so every miss ranks after every hit, and among misses
  the more accurate one ranks first (a miss at 0.6 scores 1.4·10⁶, one at 0.3 scores 1.7·10⁶).
* An infeasible sample is never launched: it is told PRUNED (so pruners' start-up counts and
  ``study.best_trial`` ignore it) with positive Optuna constraint values (``Trial.set_constraint``),
  which TPE ranks below every feasible trial, so the sampler learns to avoid it.

With ``--multi-objective`` the second objective is node-hours (nodes × job wall seconds / 3600).

``--objective images_per_sec`` makes a *layout* study (maximised): each trial trains a few epochs
without evaluation and scores its steady-state throughput, the median training images/s over the
epochs after the first (tf_cnn_benchmarks' warm-up, then timed steps).

Intermediate values reported to the pruner are the validation *error* ``1 − val_accuracy`` at
step = epoch, so they point the same way as the minimised objective.
"""

from __future__ import annotations

from dataclasses import dataclass

from explorer.record import Outcome

__all__ = ["MISS_BASE", "OBJECTIVES", "TrialOutcome", "direction", "intermediate_value",
           "interpolated_tta", "objective_values"]

MISS_BASE = 1.0e6
OBJECTIVES = ("tta_s", "tta_wall_s", "tta_interp_s", "images_per_sec")


@dataclass(frozen=True)
class TrialOutcome:
    """What one finished job achieved, read from its events and its process state."""

    state: Outcome
    reason: str
    tta_s: float | None = None
    startup_s: float | None = None
    best_val_accuracy: float = 0.0
    epochs: float = 0  # epochs trained (fractional when evaluated mid-epoch)
    wall_s: float = 0.0
    nodes: int = 1
    images_per_sec: float | None = None  # median over epochs after the first
    tta_interp_s: float | None = None  # this project's estimate (interpolated_tta), not MLPerf's

    @property
    def reached(self) -> bool:
        return self.tta_s is not None

    @property
    def tta_wall_s(self) -> float | None:
        if self.tta_s is None:
            return None
        return self.tta_s + (self.startup_s or 0.0)

    @property
    def node_hours(self) -> float:
        return self.nodes * self.wall_s / 3600.0

    def final_metrics(self) -> dict[str, float | None]:
        """The final figures, by :data:`explorer.record.FINAL_METRICS` name."""
        return {"tta_s": self.tta_s, "tta_interp_s": self.tta_interp_s,
                "startup_s": self.startup_s, "tta_wall_s": self.tta_wall_s,
                "best_val_accuracy": self.best_val_accuracy,
                "median_images_per_sec": self.images_per_sec, "node_hours": self.node_hours,
                "wall_s": self.wall_s, "epochs": self.epochs}


def objective_values(outcome: TrialOutcome, *, objective: str = "tta_s",
                     multi_objective: bool = False) -> list[float]:
    """Return the value(s) Optuna records for a finished (completed) trial."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective=}")
    if objective == "images_per_sec":
        return [float(outcome.images_per_sec or 0.0)]
    if outcome.reached:
        tta = {"tta_s": outcome.tta_s, "tta_wall_s": outcome.tta_wall_s,
               "tta_interp_s": outcome.tta_interp_s}[objective]
        first = float(tta if tta is not None else outcome.tta_s or 0.0)
    else:
        first = MISS_BASE * (2.0 - max(0.0, min(1.0, outcome.best_val_accuracy)))
    if not multi_objective:
        return [first]
    return [first, outcome.node_hours]


def interpolated_tta(curve: list[tuple[float, float]], target: float) -> float | None:
    """When accuracy crossed ``target``, by linear interpolation on the TTA clock.

    ``curve`` holds ``(elapsed_s, val_accuracy)`` at each evaluation, in order (elapsed seconds
    on the TTA clock at the end of that evaluation). The measured ``tta_s`` is the first
    evaluation at or above the target, so it moves in steps of one evaluation period;
    interpolating between the last evaluation below the target and the first at or above it
    gives a smoother figure for a search to compare configs by. It is this project's estimate,
    not an MLPerf rule. With no evaluation below the target before the hit, it is the measured
    time; None when the target was never reached.
    """
    previous: tuple[float, float] | None = None
    for elapsed, acc in curve:
        if acc >= target:
            if previous is None or acc == previous[1]:
                return elapsed
            t0, a0 = previous
            return t0 + (target - a0) / (acc - a0) * (elapsed - t0)
        previous = (elapsed, acc)
    return None


def intermediate_value(val_accuracy: float) -> float:
    """The value reported to the pruner after an epoch: validation error."""
    return 1.0 - val_accuracy


def direction(objective: str) -> str:
    """Optuna direction of the first objective."""
    return "maximize" if objective == "images_per_sec" else "minimize"
