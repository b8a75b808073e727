"""A full disk or a read-only run directory: a clear error, and the previous good files intact.

Real file systems, not mocks: each test mounts a small tmpfs (the suite runs as root) and
puts the runs root on it. A tmpfs of 250 MB holds one epoch's checkpoints (last.pt ~134 MB
with the optimiser state, best.pt ~45 MB) but not the second last.pt beside the first, so
the disk fills exactly while the engine replaces last.pt. A read-only remount stands for an
unwritable run directory (chmod would not stop root).
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from engine.protocol import rundir
from engine.config import load_config
from engine.training.checkpoint import load_checkpoint
from lenstui.fleet import Fleet, FleetError

from .conftest import TRAIN_ARGS, epochs_of, local_host, metrics, poll_until, tiny_config

pytestmark = pytest.mark.faults
NO_SPACE = "No space left on device"


def _leftovers(run_dir) -> list[str]:
    """Temp files of an interrupted atomic write."""
    return sorted(p.name for p in run_dir.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.slow
def test_a_disk_that_fills_during_a_checkpoint_fails_the_run_and_keeps_the_last_good_files(tmp_path, tmpfs,
                                                                                          synth_root):
    runs = tmpfs.mount("250m") / "runs"
    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", runs)], synth_root)
    fleet = Fleet(load_config(config), config)
    try:
        fleet.launch("A1", "local", extra_args=("--epochs", "3", *TRAIN_ARGS))
        entry = poll_until(fleet, "local", "A1", lambda e: e["state"] not in ("pending", "running"), timeout=240,
                           interval=1.0)
    finally:
        fleet.close()
    run = runs / "A1"
    log = (run / rundir.LOG_FILE).read_text()
    assert entry["state"] == "failed", log[-3000:]

    # Nothing half-written: metrics.json is whole and describes the last epoch that was saved;
    # last.pt is the previous good one (it loads, and it is that epoch's); no temp file is left.
    m = metrics(run)
    # (Epoch 1 itself finished, and may be listed; only its checkpoint could not be written.)
    assert m["status"] == "failed" and epochs_of(m) in ([1], [1, 2])
    assert load_checkpoint(run / rundir.LAST_CKPT)["epoch"] == 1
    assert load_checkpoint(run / rundir.BEST_CKPT)["epoch"] == 0
    assert _leftovers(run) == []
    assert rundir.read_run_info(run).data["exit_status"] == 1

    # The clear error: the log says which file could not be written and why, in one line a
    # person reads (not only deep inside a traceback whose last line is torch's "unexpected pos").
    assert NO_SPACE in log
    assert any(str(run / rundir.LAST_CKPT) in line and NO_SPACE in line for line in log.splitlines()), \
        "no line of stdout.log names last.pt and the full disk:\n" + log[-2500:]


def test_metrics_json_on_a_full_disk_is_the_old_file_or_the_new_one_never_half(tmp_path, tmpfs):
    run = tmpfs.mount("1m") / "A1"
    run.mkdir()
    good = rundir.new_metrics("A1", 3, {})
    good["history"] = [{"epoch": 0, "train_loss": 0.5, "val_auroc": 0.7, "val_loss": 0.6,
                        "learning_rate": 1e-4, "epoch_time_sec": 1.0}]
    rundir.write_metrics(run, good)
    before = (run / rundir.METRICS_FILE).read_bytes()
    # Fill the disk to its last byte.
    fd = os.open(tmpfs.where / "filler", os.O_WRONLY | os.O_CREAT)
    for chunk in (65536, 512, 1):
        try:
            while True:
                os.write(fd, b"\0" * chunk)
        except OSError:
            pass
    os.close(fd)
    bigger = dict(good, history=good["history"] * 200)  # needs more room than is left
    with pytest.raises(OSError) as err:
        rundir.write_metrics(run, bigger)
    assert NO_SPACE in str(err.value)
    assert (run / rundir.METRICS_FILE).read_bytes() == before
    assert json.loads(before)["history"] == good["history"]
    assert _leftovers(run) == []
    assert rundir.observe_run(run).errors == ()


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_read_only_run_directory_is_refused_with_its_name_and_nothing_changes(tmp_path, tmpfs, synth_root,
                                                                                capsys):
    root = tmpfs.mount("8m")
    runs = root / "runs"
    run = runs / "A1"
    run.mkdir(parents=True)
    previous = rundir.new_metrics("A1", 3, {})
    previous["status"] = "aborted"
    rundir.write_metrics(run, previous)
    (run / rundir.LOG_FILE).write_text("the earlier start's log\n")
    before = _digest(run)
    tmpfs.remount("ro")

    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", runs)], synth_root)
    fleet = Fleet(load_config(config), config)
    try:
        with pytest.raises(FleetError) as err:
            fleet.launch("A1", "local", extra_args=TRAIN_ARGS)
        assert fleet.poll("local").status["runs"]["A1"]["state"] == "aborted"  # still readable, as it was
    finally:
        fleet.close()
    assert err.value.code == 2
    assert str(run) in err.value.message and "Read-only file system" in err.value.message

    # The training command itself, run by hand on that host: one message, exit 2, no traceback.
    from engine.training.train import main
    from engine.training.stop import StopRequest

    try:
        code = main(["--experiment", "A1", "--config", str(config), "--host", "local", *TRAIN_ARGS],
                    stop=StopRequest())
    except Exception as exc:  # what a user would see as a traceback
        pytest.fail(f"engine.train raised {type(exc).__name__}: {exc} instead of a message and exit code 2")
    err_text = capsys.readouterr().err
    assert code == 2 and str(runs) in err_text and "Read-only file system" in err_text
    assert _digest(run) == before
