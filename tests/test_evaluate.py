"""Metrics of a model: AUROC, per-θ_E-bin AUROC, the core sensitivity curve; `python -m engine.evaluate`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from engine.protocol import rundir
from engine.config import load_config
from engine.training.evaluate import auroc, auroc_by_thetae, core_reliance, core_sensitivity, main, predict
from engine.training.splits import balanced_subset, load_device_split
from engine.training.checkpoint import save_checkpoint
from engine.training.model import build_model
from engine.synthetic.twin import write_dataset

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
BINS = [(0.5, 0.75), (0.75, 1.0), (1.0, 1.5), (1.5, 2.0), (2.0, 2.5), (2.5, 3.0)]


def test_per_bin_auroc_is_the_bins_positives_against_all_negatives():
    rng = np.random.default_rng(0)
    n = 600
    labels = rng.integers(0, 2, n)
    theta = rng.uniform(0.5, 3.0, n)
    theta[:5] = [0.5, 0.75, 1.0, 2.9999, 3.0]          # edges: low inclusive, high exclusive
    scores = labels * theta + rng.normal(0, 1, n)       # larger θ_E: easier, as in the real data
    out = auroc_by_thetae(labels, scores, theta, BINS, min_positives=10)
    assert [b["bin"] for b in out] == [list(b) for b in BINS]
    for (lo, hi), b in zip(BINS, out):
        rows = (labels == 0) | ((theta >= lo) & (theta < hi))
        assert b["count"] == int(((labels == 1) & (theta >= lo) & (theta < hi)).sum())
        assert b["auroc"] == roc_auc_score(labels[rows], scores[rows]) and b["note"] is None
    assert out[0]["auroc"] < out[-1]["auroc"]


def test_a_bin_with_too_few_positives_has_a_count_and_no_auroc():
    labels = np.array([1, 1, 0, 0, 0, 1])
    theta = np.array([0.6, 0.6, 0.6, 2.0, 2.1, 2.2])
    out = auroc_by_thetae(labels, np.arange(6.0), theta, [(0.5, 0.75), (2.0, 2.5), (2.5, 3.0)], min_positives=2)
    assert out[0]["auroc"] == roc_auc_score([1, 1, 0, 0, 0], [0, 1, 2, 3, 4]) and out[0]["count"] == 2
    assert out[1] == {"bin": [2.0, 2.5], "auroc": None, "count": 1,
                      "note": "1 positives, fewer than the 2 an AUROC needs (metrics.thetae_min_positives)"}
    assert out[2]["count"] == 0 and out[2]["auroc"] is None


def test_auroc_is_none_when_one_class_is_missing():
    assert auroc(np.array([1, 1]), np.array([0.1, 0.2])) is None
    assert auroc(np.array([0, 1]), np.array([0.1, 0.2])) == 1.0


class CoreAndRing(nn.Module):
    """A 'model' that reads the centre pixel strongly and one pixel 12 px out weakly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (2.0 * x[:, :, 31, 31] + x[:, :, 31, 43]).sum(1, keepdim=True)


def test_core_sensitivity_masks_every_image_on_the_device_and_reliance_is_the_drop_at_r7():
    rng = np.random.default_rng(1)
    n = 400
    labels = rng.integers(0, 2, n)
    x = rng.normal(0, 1, (n, 3, 63, 63)).astype(np.float32)
    x[:, :, 31, 31] += 1.5 * labels[:, None]   # a core shortcut
    x[:, :, 31, 43] += 0.5 * labels[:, None]   # weak signal at r = 12
    images = torch.from_numpy(x).half()
    model = CoreAndRing()
    curve = core_sensitivity(model, images, labels, [0, 3, 7, 12, 15], batch_size=64)
    xs = images.float().numpy()
    full = (2 * xs[:, :, 31, 31] + xs[:, :, 31, 43]).sum(1)
    ring = xs[:, :, 31, 43].sum(1)
    expect = {0: roc_auc_score(labels, full), 3: roc_auc_score(labels, ring), 7: roc_auc_score(labels, ring),
              12: roc_auc_score(labels, ring), 15: 0.5}
    got = {c["radius"]: c["auroc"] for c in curve}
    assert got == pytest.approx(expect, abs=1e-12)
    assert got[12] > 0.55  # R = 12 keeps the pixel at distance 12 (r < R is masked)
    assert core_reliance(curve, 7) == pytest.approx(expect[0] - expect[7])
    # Batching does not change a score.
    assert np.array_equal(predict(model, images, batch_size=7), predict(model, images, batch_size=4096))


def test_balanced_subset_keeps_both_classes():
    labels = np.array([1] * 90 + [0] * 10)
    idx = balanced_subset(labels, 30, seed=0)
    assert len(idx) == 30 and labels[idx].sum() == 20 and len(set(idx)) == 30
    assert np.array_equal(idx, balanced_subset(labels, 30, seed=0))


# ---------------------------------------------------------------------------
# The command line on a run directory


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("eval")
    data = write_dataset(base / "synth", rows={"train": 72, "val": 72, "test": 72}, seed=3).root
    text = (ROOT / "experiments.toml").read_text()
    text = re.sub(r"(?m)^sample_fraction = \S+", "sample_fraction = 1.0", text)
    text = re.sub(r"(?m)^thetae_min_positives = \S+", "thetae_min_positives = 2", text)
    (base / "tiny.toml").write_text(text)
    return Path(data), base / "tiny.toml"


def _run_dir(path: Path, data_root: Path, config: Path) -> torch.nn.Module:
    """A run directory as training leaves it, with a freshly initialised model as best.pt."""
    path.mkdir(parents=True)
    torch.manual_seed(0)
    model = build_model("stock")
    save_checkpoint(path / "best.pt", {"model": model.state_dict(), "stem": "stock", "in_channels": 3, "epoch": 0})
    rundir.write_run_info(path, {"experiment": "A1", "data_root": str(data_root), "overrides": {},
                                 "status": "done"})
    metrics = rundir.new_metrics("A1", 1, {})
    metrics["status"] = "done"
    rundir.write_metrics(path, metrics)
    return model.eval()


def test_evaluate_command_updates_metrics_with_the_best_checkpoint(tiny, tmp_path):
    data_root, config = tiny
    run = tmp_path / "A1"
    model = _run_dir(run, data_root, config)
    assert main(["--run", str(run), "--split", "test", "--config", str(config)]) == 0
    assert main(["--run", str(run), "--split", "val", "--config", str(config)]) == 0
    m = json.loads((run / "metrics.json").read_text())

    cfg = load_config(config)
    test = load_device_split(cfg, cfg.experiment("A1"), data_root, "test", torch.device("cpu"))
    assert len(test) == 2 * 72  # the paired view: every row's stamp and its control
    scores = predict(model, test.images)
    assert m["test_auroc"] == roc_auc_score(test.labels, scores)
    assert _values(m["test_auroc_by_thetae"]) == auroc_by_thetae(test.labels, scores, test.theta_e, BINS, 2)
    assert [c["radius"] for c in m["test_core_sensitivity"]] == [0, 3, 5, 7, 10, 15]
    assert [c["radius"] for c in m["core_sensitivity"]] == [0, 3, 5, 7, 10, 15]
    assert m["core_reliance"] == pytest.approx(m["core_sensitivity"][0]["auroc"] - m["core_sensitivity"][3]["auroc"])
    val = load_device_split(cfg, cfg.experiment("A1"), data_root, "val", torch.device("cpu"))
    assert _values(m["final_val_auroc_by_thetae"]) == auroc_by_thetae(val.labels, predict(model, val.images),
                                                                      val.theta_e, BINS, 2)
    # Beside every value a verdict reads, its 95% interval over LRGs, and how it was drawn.
    for key in ("test_auroc", "core_reliance", "best_val_auroc"):
        low, high = m[f"{key}_ci95"]
        assert low <= (m[key] if key != "best_val_auroc" else m["core_sensitivity"][0]["auroc"]) <= high
    assert all(b["ci95"] is None or b["ci95"][0] <= b["auroc"] <= b["ci95"][1] for b in m["test_auroc_by_thetae"])
    assert m["bootstrap"]["val"]["draws"] == m["bootstrap"]["test"]["draws"] == 1000
    assert m["bootstrap"]["val"]["unit"] == "LRG" and m["bootstrap"]["val"]["rows"] == len(val)
    assert m["bootstrap"]["val"]["lrgs"] == len(np.unique(val.groups)) < len(val) / 2   # ~12 rows per LRG here
    assert m["verdicts"]["thetae_min_bin_auroc"]["source"] == "final_val_auroc_by_thetae"
    assert m["verdicts"]["test_auroc"]["value"] == m["test_auroc"]
    assert m["verdicts"]["core_reliance"]["value"] == m["core_reliance"]
    assert m["status"] == "done"
    log = (run / "stdout.log").read_text()
    assert "evaluate test: best.pt (epoch 1)" in log and "evaluate val:" in log   # epochs count from 1


def _values(bins: list[dict]) -> list[dict]:
    """θ_E records without their intervals (auroc_by_thetae alone computes none)."""
    return [{k: v for k, v in b.items() if k != "ci95"} for b in bins]


def test_evaluate_command_refuses_bad_input_and_a_busy_run(tiny, tmp_path, capsys):
    data_root, config = tiny
    assert main(["--run", str(tmp_path / "nothing"), "--split", "test", "--config", str(config)]) == 2
    assert "run.json: missing; is" in capsys.readouterr().err
    run = tmp_path / "A1"
    _run_dir(run, data_root, config)
    assert main(["--run", str(run), "--split", "test", "--config", str(config),
                 "--data-root", str(tmp_path / "gone")]) == 2
    assert "not found" in capsys.readouterr().err
    fd = rundir.acquire_run_lock(run)
    try:
        assert main(["--run", str(run), "--split", "test", "--config", str(config)]) == 3
        assert "training right now" in capsys.readouterr().err
    finally:
        os.close(fd)
