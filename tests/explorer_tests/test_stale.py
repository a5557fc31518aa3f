from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna

from explorer.stale import driver_identity, kill_leftovers, recover_stale, stale_reason
from launchers.base import process_start_ticks, session_pids


def _running_trial(study, **attrs):
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    return study.get_trials(deepcopy=False)[trial.number]


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_same_host_driver_gone_or_alive(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    host = "hostA"
    me = driver_identity()
    alive = _running_trial(study, driver={**me, "host": host})
    assert stale_reason(alive, now=time.time(), stale_after_s=60, host=host) is None
    dead = _running_trial(study, driver={"host": host, "pid": _dead_pid(), "start_ticks": 1})
    reason = stale_reason(dead, now=time.time(), stale_after_s=60, host=host)
    assert reason is not None and "is gone" in reason
    # a live pid that started at another time is a reused pid: the driver is gone
    reused = _running_trial(study, driver={"host": host, "pid": 1, "start_ticks": -5})
    reason = stale_reason(reused, now=time.time(), stale_after_s=60, host=host)
    assert reason is not None and "is gone" in reason


def test_other_host_uses_the_heartbeat(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    other = {"host": "elsewhere", "pid": 1, "start_ticks": 1}
    fresh = _running_trial(study, driver=other, heartbeat=time.time())
    old = _running_trial(study, driver=other, heartbeat=time.time() - 1000)
    assert stale_reason(fresh, now=time.time(), stale_after_s=300, host="here") is None
    reason = stale_reason(old, now=time.time(), stale_after_s=300, host="here")
    assert reason is not None and "no heartbeat" in reason


def test_recover_marks_failed_and_requeues_once(tmp_path):
    storage = optuna.storages.get_storage(f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(storage=storage)
    done = study.ask()
    done.suggest_float("x", 0.0, 1.0)
    study.tell(done, 1.0)
    stale = _running_trial(study, driver={**driver_identity(), "pid": _dead_pid()})
    seen = []
    numbers = recover_stale(study, storage, stale_after_s=60, retry=True,
                            on_stale=lambda t, r: seen.append((t.number, r)))
    assert numbers == [stale.number] and seen[0][0] == stale.number
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state is optuna.trial.TrialState.COMPLETE and trials[0].value == 1.0
    assert trials[1].state is optuna.trial.TrialState.FAIL
    assert trials[1].user_attrs["stale"] is True and "gone" in trials[1].user_attrs["reason"]
    retry = trials[2]
    assert retry.state is optuna.trial.TrialState.WAITING
    assert retry.user_attrs["retry_of"] == stale.number
    again = study.ask()
    assert again.suggest_float("x", 0.0, 1.0) == stale.params["x"]
    assert recover_stale(study, storage, stale_after_s=60, retry=True) == []  # just asked: not stale


def test_kill_leftovers_only_kills_the_trials_own_session(tmp_path):
    workdir = tmp_path / "trial-0007"
    workdir.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",  # noqa: S603
                             str(workdir / "events.jsonl")], start_new_session=True)
    try:
        deadline = time.monotonic() + 10  # until it has exec'd (a loaded machine is slow)
        while str(workdir) not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(
                errors="replace") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kill_leftovers({"pid": proc.pid, "workdir": str(tmp_path / "other")}) == 0
        assert proc.poll() is None
        assert process_start_ticks(proc.pid) is not None
        assert kill_leftovers({"pid": proc.pid, "workdir": str(workdir)}) == 1
        proc.wait(timeout=10)
        assert session_pids(proc.pid) == []
    finally:
        if proc.poll() is None:
            proc.kill()
