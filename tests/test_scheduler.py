"""Where the plan's runs go: every GPU of every host with room, several runs per GPU up to the
host's max_runs_per_gpu, other people's GPU processes counted, a silent host's GPUs held for it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from engine.config import load_config
from lenstui.scheduler import MIN_FREE_MIB, RunRequest, schedule

from sshd import write_config


def config(tmp_path: Path, limits: dict[str, int]):
    tables = [f'[hosts.{h}]\ntransport = "{"local" if h == "local" else "ssh"}"\n'
              + ("" if h == "local" else f'ssh_host = "{h}"\n')
              + f'work_dir = "."\npython = "python3"\nruns_root = "runs"\ndataset = "lab"\n'
              f'max_runs_per_gpu = {n}\n' for h, n in limits.items()]
    return load_config(write_config(tmp_path / "experiments.toml", tables))


def gpu(index: int, used: int = 1000, total: int = 81559, processes=()):
    return {"index": index, "name": "H100", "memory_used_mib": used, "memory_total_mib": total,
            "processes": [dict(p) for p in processes]}


def host(gpus=(), runs=None):
    return SimpleNamespace(status={"gpus": list(gpus), "runs": runs or {}}, connected=True)


def running(gpu_index):
    return {"state": "running", "gpu": str(gpu_index)}


def test_runs_spread_over_every_gpu_of_every_host_then_pack_up_to_the_limit(tmp_path):
    cfg = config(tmp_path, {"local": 2, "lambda": 2})
    snaps = {"local": host([gpu(0)]), "lambda": host([gpu(0), gpu(1)])}
    reqs = [RunRequest(e) for e in ("A1", "B1", "B2", "B3", "B4", "FULL", "X7")]
    s = schedule(reqs, snaps, cfg)
    where = {p.request.name: p.label for p in s.placed}
    # The first three take the three GPUs (each the emptiest), the next three share them: 2 per GPU.
    assert sorted(where[e] for e in ("A1", "B1", "B2")) == ["lambda:gpu0", "lambda:gpu1", "local:gpu0"]
    assert sorted(where.values()).count("local:gpu0") == 2 and len(where) == 6
    assert [w.request.name for w in s.waiting] == ["X7"]
    assert "max_runs_per_gpu = 2" in s.waiting[0].why


def test_other_peoples_gpu_processes_take_memory_and_are_named(tmp_path):
    cfg = config(tmp_path, {"local": 4})
    full = gpu(0, used=81559 - MIN_FREE_MIB + 1, processes=[{"pid": 4242, "used_memory_mib": 70000, "experiment": None}])
    s = schedule([RunRequest("A1")], {"local": host([full])}, cfg)
    assert not s.placed
    assert "pid 4242 (70000 MiB)" in s.waiting[0].why and "MiB free" in s.waiting[0].why
    assert s.slots[0].foreign == ("pid 4242 (70000 MiB)",)


def test_a_busy_fleet_queues_and_the_queued_run_starts_when_a_gpu_frees(tmp_path):
    cfg = config(tmp_path, {"local": 1, "lambda": 1})
    busy = {"local": host([], {"A1": {"state": "running", "gpu": "cpu"}}),
            "lambda": host([gpu(0)], {"B1": running(0)})}
    s = schedule([RunRequest("B2")], busy, cfg)
    assert not s.placed and "every GPU is busy" in s.waiting[0].why
    freed = {**busy, "lambda": host([gpu(0)], {"B1": {"state": "done", "gpu": "0"}})}
    s = schedule([RunRequest("B2")], freed, cfg)
    assert [(p.request.name, p.label) for p in s.placed] == [("B2", "lambda:gpu0")]


def test_a_silent_host_keeps_its_gpus_until_it_is_declared_gone(tmp_path):
    cfg = config(tmp_path, {"local": 1, "lambda": 1})
    snaps = {"local": host([], {"A1": {"state": "running"}}),
             "lambda": SimpleNamespace(status=None, connected=False)}
    s = schedule([RunRequest("B1", host="lambda")], snaps, cfg)
    assert not s.placed and "held for it" in s.waiting[0].why
    s = schedule([RunRequest("B1")], snaps, cfg)
    assert not s.placed and "held for hosts not answering: lambda" in s.waiting[0].why
    assert s.held == ("lambda",)
    # Declared gone: its GPUs are no longer held; nothing else answers with room, so B1 still waits,
    # but no longer for lambda.
    s = schedule([RunRequest("B1")], snaps, cfg, gone={"lambda"})
    assert s.held == () and "lambda" not in s.waiting[0].why


def test_the_request_records_who_asked_and_where_it_went():
    req = RunRequest("B2", extra_args=("--epochs", "2"), requested_by="plan", plan_step="3.1",
                     decision="§10: TEST MASKING VARIANTS")
    assert req.name == "B2"
    assert req.provenance("h1", "0") == {"requested_by": "plan", "host": "h1", "gpu": "0", "plan_step": "3.1",
                                         "decision": "§10: TEST MASKING VARIANTS"}
    assert RunRequest("B1", run_name="B1~seed7", extra_args=("--seed", "7")).name == "B1~seed7"
