"""Bad input: a clear message, nothing lost, and the app keeps running.

- malformed experiments.toml files (24 of them) through `lenstui status --config BAD` and
  `python -m engine.train --config BAD`: exit code 2, one message naming the file and the
  key, never a traceback, no run directory created;
- bad data under a real training run: corrupt NPZ blobs, NaN pixels, wrong shapes, shards
  without an index column (the manifest cannot be built), a truncated Parquet shard: the run
  fails with the shard and row named; under the bad-row threshold rows are dropped and counted;
- garbage and half-written metrics.json files on a host: that run shows its error, the
  others show normally, and the real app keeps polling;
- a host whose engine is older than this lenstui: said in words, with the fix.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import ENGINE_VERSION

from engine.protocol import rundir
from engine.config import load_config
from lenstui.app import make_app
from lenstui.fleet import Fleet
from lenstui.screens.detail import DetailScreen

from .conftest import TRAIN_ARGS, app_wait, cell, copy_dataset, local_host, ssh_host, tiny_config

pytestmark = pytest.mark.faults


# ---------------------------------------------------------------------------
# Malformed experiments.toml

def _swap(old: str, new: str, count: int = 1) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, f"the plan no longer contains {old!r}: update this case"
        return text.replace(old, new, count)
    return edit


def _append(extra: str) -> Callable[[str], str]:
    return lambda text: text + "\n" + extra


# name -> (how to break the good file, what the message must contain besides the file name)
BAD_CONFIGS: dict[str, tuple[Callable[[str], str] | bytes | None, tuple[str, ...]]] = {
    "toml_syntax": (_swap("epochs = 50", "epochs = = 50"), ("not valid TOML", "line")),
    "table_twice": (_append("[training]\nepochs = 3\n"), ("not valid TOML",)),
    "misspelt_table": (_swap("[augmentation]", "[augmentatoin]"),
                       ("augmentatoin: unknown table", "did you mean [augmentation]?")),
    "string_for_int": (_swap("epochs = 50", 'epochs = "fifty"'), ("training.epochs", "integer")),
    "zero_batch": (_swap("batch_size = 8", "batch_size = 0"), ("training.batch_size", "minimum")),
    "bool_for_number": (_swap("weight_decay = 1.0e-4", "weight_decay = true"), ("training.weight_decay",)),
    "misspelt_key": (_swap("learning_rate = 1.0e-4", "learning_rat = 1.0e-4"), ("learning_rat", "learning_rate")),
    "bad_choice": (_swap('optimizer = "adamw"', 'optimizer = "sgd"'), ("training.optimizer", "adamw")),
    "probability_above_1": (_swap("hflip_p = 0.5", "hflip_p = 1.5"), ("augmentation.hflip_p",)),
    "bins_not_increasing": (_swap("[0.50, 0.75, 1.00,", "[0.50, 1.00, 0.75,"), ("metrics.thetae_bins[2]",)),
    "odd_gate_sample": (_swap("gate_n_samples = 20", "gate_n_samples = 21"), ("metrics.gate_n_samples", "even")),
    "band_wrong_way_round": (_swap("pass_below = 0.60\nfail_above = 0.65", "pass_below = 0.70\nfail_above = 0.65"),
                             ("thresholds.core_lr_auc",)),
    "shell_in_experiment_id": (_swap("[experiments.B4]", '[experiments."B4;rm -rf ~"]'),
                               ("B4;rm -rf ~", "[A-Za-z0-9_.-]")),
    "ids_differing_in_case": (_swap("[experiments.B4]", "[experiments.a1]"), ("'a1'", "'A1'", "case")),
    "unknown_base": (_swap('base = "B1"', 'base = "B9"'), ("experiments.FULL.base", "B9")),
    "unknown_mask_kind": (_swap('masking = { kind = "none" }', 'masking = { kind = "nothing" }'),
                          ("experiments.A1.masking.kind", "nothing")),
    "schedule_not_from_0": (_swap("{ from_epoch = 0,  radius = 7", "{ from_epoch = 2,  radius = 7"),
                            ("experiments.B3.masking.schedule[0].from_epoch",)),
    "unknown_dataset": (_swap('dataset = "lab"', 'dataset = "nope"'), ("hosts.local.dataset", "nope")),
    "ssh_host_missing": (_append('[hosts.gpu]\ntransport = "ssh"\nwork_dir = "/w"\npython = "python3"\n'
                                 'runs_root = "/r"\ndataset = "lab"\n'), ("hosts.gpu.ssh_host",)),
    "shell_in_host_name": (_append('[hosts."gpu$(touch x)"]\ntransport = "ssh"\nssh_host = "g"\nwork_dir = "/w"\n'
                                   'python = "python3"\nruns_root = "/r"\ndataset = "lab"\n'),
                           ("gpu$(touch x)", "[A-Za-z0-9_.-]")),
    "newline_in_path": (_swap('runs_root = "', 'runs_root = "x\\n'), ("hosts.local.runs_root", "control character")),
    "empty_file": (lambda text: "", ("plan",)),
    "not_utf8": (b"[plan]\nname = \"\xff\xfe\"\n", ("not UTF-8",)),
    "missing_file": (None, ("file not found",)),
}


@pytest.fixture(scope="module")
def good_config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good")
    return tiny_config(root / "experiments.toml", [local_host("local", root / "runs")], root / "data")


def _bad_file(name: str, good: Path, folder: Path) -> Path:
    edit = BAD_CONFIGS[name][0]
    path = folder / f"{name}.toml"
    if isinstance(edit, bytes):
        path.write_bytes(edit)
    elif edit is not None:
        path.write_text(edit(good.read_text()))
    return path


def test_the_good_config_loads(good_config):
    load_config(good_config)  # so every failure below is the one edit's


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_a_malformed_config_is_one_message_with_file_and_key_and_exit_2(name, good_config, tmp_path, capsys):
    from lenstui.cli import main as lenstui_main

    bad = _bad_file(name, good_config, tmp_path)
    runs = tmp_path / "runs"
    assert lenstui_main(["--config", str(bad), "status"]) == 2
    cli_err = capsys.readouterr().err
    from engine.training.train import main as train_main
    from engine.training.stop import StopRequest

    assert train_main(["--experiment", "A1", "--config", str(bad), "--runs-root", str(runs)],
                      stop=StopRequest()) == 2
    train_err = capsys.readouterr().err
    for err in (cli_err, train_err):
        assert str(bad) in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
        for words in BAD_CONFIGS[name][1]:
            assert words in err, f"{words!r} not in {err!r}"
    assert not runs.exists()  # nothing started, nothing written
    assert not (tmp_path / "x").exists()


def test_the_real_commands_exit_2_without_a_traceback(good_config, tmp_path):
    """The same through the console script and `python -m engine.train`, as separate processes."""
    bad = _bad_file("string_for_int", good_config, tmp_path)
    lenstui = Path(sys.executable).parent / "lenstui"
    commands = [[str(lenstui), "--config", str(bad), "status"],
                [str(lenstui), "--config", str(bad)],  # opening the app: refused before the screen is taken
                [sys.executable, "-m", "engine.train", "--experiment", "A1", "--config", str(bad)]]
    for argv in commands:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 2, (argv, done.stderr)
        assert "Traceback" not in done.stderr and str(bad) in done.stderr and "training.epochs" in done.stderr


# ---------------------------------------------------------------------------
# Bad data under a real training run


def _first_train_shard(root: Path) -> Path:
    return sorted((root / "train").glob("*.parquet"))[0]


def _set_blob(row: int, blob: bytes) -> Callable[[pa.Table], pa.Table]:
    def edit(table: pa.Table) -> pa.Table:
        values = table.column("stamp_npz").to_pylist()
        values[row] = blob
        return table.set_column(table.schema.get_field_index("stamp_npz"), "stamp_npz",
                                pa.array(values, type=pa.binary()))
    return edit


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


_NAN = np.zeros((3, 64, 64), np.float32)
_NAN[1, 30, 30] = np.nan
_SMALL = np.zeros((32, 32), np.float32)

BAD_DATA = {
    "corrupt_npz": (_set_blob(5, b"PK\x03\x04 not a zip archive at all"), ("row 5", "not an NPZ")),
    "nan_pixels": (_set_blob(6, _npz(image_g=_NAN[0], image_r=_NAN[1], image_z=_NAN[2])), ("row 6", "NaN")),
    "wrong_shape": (_set_blob(7, _npz(image_g=_SMALL, image_r=_SMALL, image_z=_SMALL)), ("row 7", "wrong shape")),
    "missing_index_column": (lambda t: t.drop(["theta_e_arcsec"]), ("row 0", "missing column theta_e_arcsec")),
}


@pytest.mark.parametrize("name", [*BAD_DATA, "truncated_shard"])
def test_training_on_bad_data_fails_naming_the_shard_and_row(name, synth_root, tmp_path, capsys):
    from engine.training.train import main
    from engine.training.stop import StopRequest

    data = copy_dataset(synth_root, tmp_path / "data")
    shard = _first_train_shard(data)
    if name == "truncated_shard":
        blob = shard.read_bytes()
        shard.write_bytes(blob[: len(blob) // 2])  # a copy that stopped half-way
        expected = (str(shard), "truncated or corrupt")
    else:
        edit, expected = BAD_DATA[name]
        pq.write_table(edit(pq.read_table(shard)), shard)
        expected = ("train/" + shard.name, *expected)
    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", tmp_path / "runs")], data)
    runs = tmp_path / "runs"
    code = main(["--experiment", "A1", "--config", str(config), "--host", "local", "--epochs", "1", *TRAIN_ARGS],
                stop=StopRequest())
    capsys.readouterr()
    run = runs / "A1"
    log = (run / rundir.LOG_FILE).read_text()
    assert code == 1 and rundir.observe_run(run).state is rundir.RunState.FAILED, log[-2000:]
    # One line of the log says it all: which shard, which row, what is wrong with it.
    assert any(all(words in line for words in expected) for line in log.splitlines()), \
        f"no line names {expected}:\n{log[-2000:]}"
    assert "FAILED: bad data:" in log and "Traceback" not in log, log[-2000:]
    assert not (run / rundir.LAST_CKPT).exists()  # it failed before training: nothing pretends otherwise


def test_a_few_bad_rows_under_the_threshold_are_dropped_and_counted(synth_root, tmp_path, capsys):
    from engine.data.manifest import main as manifest_main

    data = copy_dataset(synth_root, tmp_path / "data")
    shard = _first_train_shard(data)
    table = pq.read_table(shard)
    theta = table.column("theta_e_arcsec").to_pylist()
    theta[3] = None  # one row without its θ_E
    pq.write_table(table.set_column(table.schema.get_field_index("theta_e_arcsec"), "theta_e_arcsec",
                                    pa.array(theta, type=pa.float64())), shard)
    assert manifest_main(["--data-root", str(data), "--bad-row-limit", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "train/" + shard.name in out and "row 3" in out  # counted and named, not silently gone
    assert manifest_main(["--data-root", str(data), "--bad-row-limit", "0.001"]) == 2
    err = capsys.readouterr().err
    assert "1 of 96 rows are bad" in err and "row 3" in err


# ---------------------------------------------------------------------------
# Garbage on a host: metrics.json files that are not what they should be


def _write_done_run(run: Path) -> None:
    run.mkdir(parents=True)
    m = rundir.new_metrics(run.name, 2, {"epochs": 2})
    m["history"] = [{"epoch": e, "train_loss": 0.5, "val_auroc": 0.8 + 0.01 * e, "val_loss": 0.6,
                     "learning_rate": 1e-4, "epoch_time_sec": 1.0} for e in range(2)]
    m["status"] = "done"
    rundir.write_metrics(run, m)


async def test_garbled_metrics_files_show_an_error_for_their_run_and_the_app_keeps_running(tmp_path):
    runs = tmp_path / "runs"
    _write_done_run(runs / "A1")
    half = json.dumps(rundir.new_metrics("B1", 2, {}))
    (runs / "B1").mkdir()
    (runs / "B1" / rundir.METRICS_FILE).write_text(half[: len(half) // 2])       # half-written
    (runs / "B2").mkdir()
    (runs / "B2" / rundir.METRICS_FILE).write_bytes(b"\x00\xffgarbage\x89PNG")    # garbage
    (runs / "B3").mkdir()
    (runs / "B3" / rundir.METRICS_FILE).write_text('["a", "list"]')              # JSON, wrong shape
    (runs / "B3" / rundir.RUN_FILE).write_text('{"pid": "twelve", "status": 7}')  # nonsense fields
    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", runs)])

    from lenstui.cli import format_snapshot

    fleet = Fleet(load_config(config), config)
    try:
        text = format_snapshot(fleet.poll("local"))
    finally:
        fleet.close()
    assert re.search(r"A1\s+done\s+epoch 2/2", text), text
    for exp, words in (("B1", "not valid JSON"), ("B2", "cannot read"), ("B3", "expected a JSON object")):
        assert f"{runs / exp / rundir.METRICS_FILE}: {words}" in text, text

    app = make_app(config, refresh_s=0.3)
    try:
        async with app.run_test(size=(140, 44)) as pilot:
            await app_wait(pilot, lambda: "local" in app.snapshots, timeout=20)
            polls = app.snapshots["local"].status["time"]
            await app_wait(pilot, lambda: app.snapshots["local"].status["time"] > polls + 1, timeout=20)
            assert app.is_running and cell(app, "A1", "status") == "done" and cell(app, "A1", "epoch") == "2/2"
            app.matrix.select("B1")
            await pilot.press("enter")
            detail = await app_wait(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen)
            await pilot.pause(0.2)
            title = str(detail.query_one("#detail-title").render())
            assert "not valid JSON" in title and str(runs / "B1" / rundir.METRICS_FILE) in title
            await pilot.press("escape")
            await pilot.pause(0.5)
            assert app.is_running
    finally:
        app.fleet.close()


# ---------------------------------------------------------------------------
# A host that runs an old engine


@pytest.mark.ssh
def test_a_host_with_an_old_engine_is_told_to_sync(tmp_path, lab):
    server = lab.servers["h1"]
    config = tiny_config(tmp_path / "experiments.toml", [local_host("local", tmp_path / "runs"),
                                                          ssh_host("h1", server)])
    fleet = Fleet(load_config(config), config, ssh_options=lab.options())
    try:
        fleet.sync("h1")
        assert fleet.poll("h1").status["engine_version"] == ENGINE_VERSION
        init = server.work_dir / "engine" / "__init__.py"  # a host synced long ago
        init.write_text(re.sub(r'ENGINE_VERSION = "[^"]*"', 'ENGINE_VERSION = "0.0.1"', init.read_text()))
        snap = fleet.poll("h1")
    finally:
        fleet.close()
    wanted = re.compile(r"host h1 runs engine 0\.0\.1, this lenstui needs ≥ \d+\.\d+(\.\d+)?; "
                        r"run `lenstui sync --host h1`")
    assert snap.connected and snap.error and wanted.search(snap.error), snap.error

    from lenstui.cli import format_snapshot

    assert wanted.search(format_snapshot(snap))
