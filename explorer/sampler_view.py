"""Samplers learn from sampled trials only: fixed trials are hidden from them.

A study holds fixed trials beside the sampled ones: the baseline (``--baseline``), confirmation
repeats (``study confirm``) and layout measurements (stage 1 of ``--strategy layout-first``). They
run a given config, so they carry no sampled parameters (the baseline's schedule is not even a
point of the space). Optuna's relative samplers infer their search space as the *intersection* of
every finished trial's parameters (``IntersectionSearchSpace``), so one trial with none empties it:

* multivariate TPE (Optuna 5's default) falls back to independent, per-parameter TPE;
* ``GPSampler`` falls back to **random** sampling for every parameter.

:class:`SampledOnly` wraps a sampler and shows it the study without its fixed trials (those with
a ``fixed`` user attribute). The pruner still sees every trial: a baseline's learning curve is a
fair rung to compare against.

TPE sees infeasible samples (PRUNED, with their positive constraint values, which its split ranks
after every feasible trial) only once the study's completed samples fill its "good" group (its
best ``γ(n)`` trials) by themselves; before that it does not see them at all. Both halves are
needed:

* Optuna's TPE fills its good group first with complete, then pruned, then infeasible trials
  (least violation first). An infeasible sample is known before anything runs, so a study on a
  large pool asks many while its first trials still run; shown, they pad the good group and TPE
  steers into the infeasible point that violates least (a 128-node rehearsal of the seed-scale
  space on hosts without bf16 asked bf16 fifty times in a row and stopped);
* never shown, they never teach TPE where the infeasible region is: once it has converged next
  to it (1 × 2 and 2 × 1 are the bench space's best layouts, 2 × 2 does not fit), it proposed
  2 × 2 fifty times in a row in most replays (``bench.replay``).

``GPSampler`` needs two more things to work on this toolkit's studies (``SampledOnly(gp,
for_gp=True)``):

* it reads only COMPLETE trials, but an infeasible sample is told PRUNED (so that no pruner or
  best-trial rule counts it). GP would then never learn where the infeasible region is and would
  propose the same infeasible point again and again, until the driver gives up. The view shows
  it an infeasible sample as a COMPLETE trial with the worst value and its constraint values,
  which is what Optuna's constrained GP expects;
* a Gaussian process on raw values is ruled by the miss encoding (10⁶ s and more against hits of
  seconds to hours, :mod:`explorer.objective`), so the view shows it ``log1p(value)``: the order
  is the same, the scale fit for a GP. (TPE ranks values, so it needs neither.)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from explorer.record import Outcome

__all__ = ["SampledOnly"]


WORST_LOG_VALUE = math.log1p(4.0e6)  # above every miss (explorer.objective: < 2·10⁶)


def _sampled(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if not t.user_attrs.get("fixed")]


def _infeasible(t: FrozenTrial) -> bool:
    return t.state == TrialState.PRUNED and t.user_attrs.get("state") == Outcome.INFEASIBLE.value


def _tpe_gamma(n: int) -> int:
    """How many trials TPE's "good" group holds (``TPESampler``'s default gamma)."""
    return min(math.ceil(0.1 * n), 25)


def _for_tpe(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials as TPE sees them: infeasible samples (PRUNED, with their positive constraint
    values, which TPE ranks after every feasible trial) only once the study's completed samples
    fill TPE's good group on their own; until then, none (see the module doc)."""
    if not any(_infeasible(t) for t in trials):
        return trials
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED,
                                                TrialState.RUNNING)]
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    if complete >= _tpe_gamma(len(counted)):
        return trials
    return [t for t in trials if not _infeasible(t)]


def _for_gp(t: FrozenTrial, maximize: bool) -> FrozenTrial:
    """A trial as the GP sees it: log1p values; an infeasible sample COMPLETE at the worst."""
    if t.state == TrialState.COMPLETE and t.values is not None:
        shown = copy.copy(t)
        shown.values = [math.log1p(max(0.0, v)) for v in t.values]
        return shown
    if _infeasible(t):
        shown = copy.copy(t)
        shown.state = TrialState.COMPLETE
        shown.values = [0.0 if maximize else WORST_LOG_VALUE]
        return shown
    return t


class _StudyView:
    """The study as its sampler sees it: the same, minus fixed trials (and for a GP, see the
    module doc)."""

    def __init__(self, study: optuna.Study, *, for_gp: bool = False) -> None:
        self._study = study
        self._for_gp = for_gp and len(study.directions) == 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _shown(self, trials: list[FrozenTrial], states: Any) -> list[FrozenTrial]:
        trials = _sampled(trials)
        if self._for_gp:
            maximize = self._study.direction == optuna.study.StudyDirection.MAXIMIZE
            trials = [_for_gp(t, maximize) for t in trials]
        else:  # TPE: infeasible samples once they cannot be among its best
            trials = _for_tpe(trials)
        return [t for t in trials if states is None or t.state in states]

    def _get_trials(self, deepcopy: bool = True, states: Any = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        return self._shown(self._study._get_trials(deepcopy=deepcopy, states=None,
                                                   use_cache=use_cache), states)

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        return self._shown(self._study.get_trials(deepcopy=deepcopy, states=None), states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class SampledOnly(optuna.samplers.BaseSampler):
    """``inner``, fed the study without its fixed trials (see the module doc)."""

    def __init__(self, inner: optuna.samplers.BaseSampler, *, for_gp: bool = False) -> None:
        self.inner = inner
        self.for_gp = for_gp

    def _view(self, study: optuna.Study) -> Any:
        return _StudyView(study, for_gp=self.for_gp)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.inner.sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.inner.sample_independent(self._view(study), trial, param_name,
                                             param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
