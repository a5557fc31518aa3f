from __future__ import annotations

import shlex
from pathlib import Path

import optuna
import pytest
import yaml

from explorer import export
from explorer.cli import main
from explorer.mcnn.config import config_from_dict, load_config
from launchers.hosts import HostInfo
from mcnn_base.errors import ConfigError
from search_spaces.plan import build_plan
from search_spaces.space import load_space

SHIPPED = Path(__file__).resolve().parents[2] / "search_spaces"


def _trial(tmp_path, value, tta, ranks=2, threads=1, binding="core", state="COMPLETE"):
    space = load_space(SHIPPED / "tiny.yaml")
    params = {"peak_lr": 0.02, "per_worker_batch": 8, "ranks_per_node": ranks,
              "threads_per_rank": threads, "binding": binding}
    plan = build_plan(space, params, data_root=tmp_path / "data", n_train=200,
                      hosts=[HostInfo("localhost", 2)], overrides={"target_accuracy": 0.5})
    dists = {"peak_lr": optuna.distributions.FloatDistribution(0.01, 0.05, log=True),
             "per_worker_batch": optuna.distributions.CategoricalDistribution([8, 16]),
             "ranks_per_node": optuna.distributions.CategoricalDistribution([1, 2]),
             "threads_per_rank": optuna.distributions.CategoricalDistribution([1, 2]),
             "binding": optuna.distributions.CategoricalDistribution(["none", "core"])}
    return optuna.trial.create_trial(
        state=getattr(optuna.trial.TrialState, state),
        value=value if state == "COMPLETE" else None, params=params, distributions=dists,
        user_attrs={"config": plan.config, "derived": plan.derived, "tta_s": tta,
                    "best_val_accuracy": 0.6, "argv": ["mpirun", "-np", str(ranks)]})


@pytest.fixture
def storage(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    study.add_trial(_trial(tmp_path, 40.0, 40.0, ranks=1, threads=2, binding="none"))
    study.add_trial(_trial(tmp_path, 25.0, 25.0, ranks=2, threads=1, binding="core"))
    study.add_trial(_trial(tmp_path, None, None, state="FAIL"))
    return url


def test_yaml_export_is_the_best_trials_validated_config(storage, tmp_path):
    study = export.load_study("s", storage)
    text = export.render_yaml(study)
    assert text.startswith("# best trial 1 of study 's': TTA 25.0s")
    cfg = config_from_dict(yaml.safe_load(text))
    assert cfg.layout is not None and cfg.layout.ranks_per_node == 2
    assert cfg.layout.binding == "core" and cfg.target_accuracy == 0.5
    assert cfg.events is None and cfg.fault is None


def test_mpirun_export_has_env_binding_and_the_config(storage, tmp_path):
    study = export.load_study("s", storage)
    script = export.render_mpirun(study, tmp_path / "best.yaml")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert "export OMP_NUM_THREADS=1" in lines
    argv = shlex.split(lines[-1])
    assert argv[:4] == ["exec", "mpirun", "-np", "2"]
    assert argv[argv.index("--map-by") + 1] == "slot:PE=1" and "--bind-to" in argv
    assert argv[argv.index("--config") + 1] == str((tmp_path / "best.yaml").resolve())
    assert "# as launched by the study: mpirun -np 2" in lines


def test_cli_export_writes_files_that_load(storage, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["study", "export", "--study", "s", "--storage", storage, "--format", "yaml",
                 "--out", "best.yaml"]) == 0
    assert load_config(tmp_path / "best.yaml").layout is not None
    assert main(["study", "export", "--study", "s", "--storage", storage, "--format", "sbatch",
                 "--out", "best.sbatch"]) == 0
    script = (tmp_path / "best.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=2" in script and "srun " in script
    assert load_config(tmp_path / "best.yaml").per_worker_batch == 8
    assert main(["study", "status", "--study", "s", "--storage", storage]) == 0
    assert "FAIL" in capsys.readouterr().out


def test_export_errors_are_clear(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'nope.db'}"
    assert main(["study", "export", "--study", "s", "--storage", missing]) == 2
    assert "no Optuna storage at" in capsys.readouterr().err
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="empty", storage=url)
    assert main(["study", "export", "--study", "other", "--storage", url]) == 2
    assert "no study named 'other'" in capsys.readouterr().err
    study.add_trial(_trial(tmp_path, None, None, state="FAIL"))
    with pytest.raises(ConfigError, match=r"no completed feasible trial.*1 FAIL"):
        export.render_yaml(export.load_study("empty", url))


def test_multi_objective_export_takes_the_fastest_pareto_trial(tmp_path):
    from explorer.study import best_trial

    url = f"sqlite:///{tmp_path / 'mo.db'}"
    study = optuna.create_study(study_name="mo", storage=url, directions=["minimize"] * 2)
    for tta, node_hours in [(30.0, 0.02), (20.0, 0.05), (40.0, 0.06)]:  # the last is dominated
        t = _trial(tmp_path, tta, tta)
        study.add_trial(optuna.trial.create_trial(
            state=t.state, values=[tta, node_hours], params=t.params,
            distributions=t.distributions, user_attrs=t.user_attrs))
    assert {t.number for t in study.best_trials} == {0, 1}
    best = best_trial(study)
    assert best is not None and best.number == 1
    assert export.render_yaml(export.load_study("mo", url)).startswith(
        "# best trial 1 of study 'mo': TTA 20.0s")


def test_a_storage_password_is_never_printed_nor_exported(storage, tmp_path, monkeypatch,
                                                          capsys):
    """Every command that opens a study by URL, with a PostgreSQL URL holding a password (served
    here by the sqlite study: no server needed): outputs, messages and written files mask it."""
    import explorer.preflight

    secret = "hunter2-secret"
    url = f"postgresql://explorer:{secret}@db.example:5432/studies"
    sqlite, load, names = storage, optuna.load_study, optuna.get_all_study_names
    monkeypatch.setattr(explorer.preflight, "check_storage", lambda *args, **kw: None)
    monkeypatch.setattr(optuna, "load_study",
                        lambda study_name, storage: load(study_name=study_name, storage=sqlite))
    monkeypatch.setattr(optuna, "get_all_study_names", lambda storage: names(storage=sqlite))
    monkeypatch.chdir(tmp_path)
    for fmt in export.FORMATS:
        assert main(["study", "export", "--study", "s", "--storage", url, "--format", fmt,
                     "--out", f"best-{fmt}.out"]) == 0
    assert main(["study", "export", "--study", "s", "--storage", url, "--format", "mpirun"]) == 0
    assert main(["study", "status", "--study", "s", "--storage", url]) == 0
    assert main(["study", "export", "--study", "nope", "--storage", url]) == 2
    out, err = capsys.readouterr()
    assert "no study named 'nope' in postgresql://explorer:***@db.example:5432/studies" in err
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".db"]
    assert len(written) >= 5  # three outputs and the configs the scripts run
    for text in [out, err, *(p.read_text() for p in written)]:
        assert secret not in text
