"""Samplers see sampled trials only; GP learns from infeasible samples (explorer.sampler_view)."""

from __future__ import annotations

import math

import optuna
import pytest

from explorer import sampler_view
from explorer.record import Outcome, enqueue, set_attrs
from explorer.sampler_view import SampledOnly
from explorer.study import make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study_with_a_baseline(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    study = optuna.create_study(sampler=sampler)
    enqueue(study, baseline=True, fixed={"name": "seed", "params": {}, "overrides": {}})
    base = study.ask()  # a fixed trial: no sampled parameter
    study.tell(base, 50.0)
    for _ in range(6):
        t = study.ask()
        study.tell(t, t.suggest_float("lr", 1e-3, 1e-1, log=True) + t.suggest_int("batch", 8, 64))
    return study


def test_a_fixed_trial_empties_the_multivariate_search_space_unless_hidden():
    plain = optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
    study = _study_with_a_baseline(plain)
    probe = study.ask()
    assert plain.infer_relative_search_space(study, study.trials[probe.number]) == {}  # the bug
    wrapped = SampledOnly(optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    study = _study_with_a_baseline(wrapped)
    probe = study.ask()
    assert set(wrapped.infer_relative_search_space(study, study.trials[probe.number])) == {
        "lr", "batch"}


def _gp_run(sampler: optuna.samplers.BaseSampler) -> list[int]:
    """A layout-like space where the value improves towards an infeasible corner (ranks ×
    threads > 2 cores), told as the driver tells it; the trial numbers that were infeasible."""
    study = optuna.create_study(sampler=sampler)
    infeasible = []
    for n in range(24):
        trial = study.ask()
        ranks = trial.suggest_categorical("ranks", [1, 2])
        threads = trial.suggest_categorical("threads", [1, 2])
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        trial.set_constraint("cores", ranks * threads - 2)
        if ranks * threads > 2:
            set_attrs(trial, state=Outcome.INFEASIBLE, reason="4 > 2 cores")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            infeasible.append(n)
        else:
            study.tell(trial, 100.0 / (ranks * threads) + 1000.0 * abs(lr - 0.02))
    return infeasible


@pytest.mark.timeout(120)
def test_gp_learns_where_samples_are_infeasible_instead_of_proposing_them_again():
    # unwrapped, GPSampler never sees the PRUNED infeasible samples and keeps proposing the
    # corner after its 10 start-up trials (trials 12-23 here, measured on Optuna 5.0)
    assert len([n for n in _gp_run(optuna.samplers.GPSampler(seed=0)) if n >= 10]) >= 8
    assert len([n for n in _gp_run(make_sampler("gp", 0)) if n >= 10]) <= 2


def _tpe_while_trials_run(sampler: optuna.samplers.BaseSampler) -> int:
    """A large pool's first minutes: feasible samples start and keep running, infeasible ones
    (bf16 on hosts without it, or x >= 4; violations 1 to 41) are told at once as the driver
    tells them; how many of asks 20–59 were infeasible."""
    study = optuna.create_study(sampler=sampler)
    infeasible = 0
    for n in range(60):
        trial = study.ask()
        x = trial.suggest_categorical("x", list(range(8)))
        bf16 = trial.suggest_categorical("precision", ["float32", "bf16"]) == "bf16"
        trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        violation = float(bf16) + (10.0 * (x - 3) if x >= 4 else 0.0)
        trial.set_constraint("rules", violation if violation > 0 else -1.0)
        if violation > 0:
            set_attrs(trial, state=Outcome.INFEASIBLE, reason="cannot run here")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            infeasible += n >= 20
    return infeasible


def test_tpe_is_not_steered_into_infeasible_samples_while_its_first_trials_run():
    # plain TPE pads its good group with the infeasible samples (least violation first: bf16
    # alone) while nothing has finished, and proposes them again and again
    prior = _tpe_while_trials_run(optuna.samplers.RandomSampler(seed=0))
    assert _tpe_while_trials_run(optuna.samplers.TPESampler(seed=0, n_startup_trials=5)) \
        >= prior + 6
    # unshown, they leave TPE at its start-up (random) sampling until a trial finishes
    assert _tpe_while_trials_run(make_sampler("tpe", 0)) == prior


def _tpe_next_to_an_infeasible_corner(sampler: optuna.samplers.BaseSampler) -> int:
    """The bench space's situation: the best layouts (1 × 2, 2 × 1) border one that does not
    fit (2 × 2); trials finish as they are told. How many of asks 30–59 were infeasible."""
    study = optuna.create_study(sampler=sampler)
    infeasible = 0
    for n in range(60):
        trial = study.ask()
        ranks = trial.suggest_categorical("ranks", [1, 2])
        threads = trial.suggest_categorical("threads", [1, 2])
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        trial.set_constraint("cores", float(ranks * threads - 2))
        if ranks * threads > 2:
            set_attrs(trial, state=Outcome.INFEASIBLE, reason="4 > 2 cores")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            infeasible += n >= 30
        else:
            study.tell(trial, 100.0 / (ranks * threads) + 1000.0 * abs(math.log(lr / 0.02)))
    return infeasible


def test_tpe_learns_an_infeasible_corner_once_its_good_group_is_full(monkeypatch):
    assert _tpe_next_to_an_infeasible_corner(make_sampler("tpe", 0)) <= 8
    # never shown them, it converges next to the corner and proposes it again and again
    monkeypatch.setattr(sampler_view, "_tpe_gamma", lambda n: 10**9)
    assert _tpe_next_to_an_infeasible_corner(make_sampler("tpe", 0)) >= 20
