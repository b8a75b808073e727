"""Shortcut gates: can a trivial model tell lenses from non-lenses without looking at arcs?

- core_lr_auc: logistic regression on the central core_box × core_box pixels × 3 bands
  (300 features for the plan's 10×10) of the preprocessed images.
- radial_lr_auc: the same on the per-band azimuthal median radial profile (3 × 32 features).

Both: features standardised inside each fold, 5-fold CV stratified *and grouped by LRG*
(StratifiedGroupKFold: the twins of a pair never sit on both sides of a fold), AUROC of the
out-of-fold probabilities, on a balanced random sample (1000/1000, fixed seed). An
optional mask sets pixels with r < R to 0 before the features are taken. The command line
also gives a 95% interval: the out-of-fold AUROC recomputed on LRGs drawn with replacement
(an LRG's rows share its host, so the LRG, not the row, is the unit that varies).

`ungrouped=True` also gives the published method's value: the same probe with plain
StratifiedKFold (no groups), as the public work computed its gate matrix. It is shown beside
the grouped value for comparison only: in the unpaired view an LRG's ~12 near-identical rows
all carry one label, so plain folds let the probe recognise hosts it has seen (it reads
above the truth), and in the paired view twins on both sides of a fold push it below 0.5.

    python -m engine.gates --data-root ROOT --mode paired --preprocessing residual [--mask-radius 7]
    python -m engine.gates --data-root ROOT --matrix      # the whole matrix beside the published one
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from engine.config import DATA_MODES, DEFAULT_BOOTSTRAP_DRAWS as DEFAULT_DRAWS
from engine.config import DEFAULT_BOOTSTRAP_SEED as DEFAULT_SEED
from engine.config import PREPROCESSINGS, SAMPLES, SPLITS
from engine.data.cachedir import DEFAULT_NAME
from engine.data.preprocess import radial_profile, radius_map
from engine.numbers import fixed
from engine.protocol import exitcodes

# SCIENCE.md "Shortcut gates": the published matrix (n = 2000), core / radial AUC.
PUBLISHED = {
    ("paired", "raw_robust", 0): (0.951, "~0.98"),
    ("unpaired", "raw_robust", 0): (0.949, "~0.98"),
    ("paired", "residual", 0): (0.554, "~0.50"),
    ("unpaired", "residual", 0): (0.694, "~0.50"),
    ("unpaired", "residual", 7): (0.518, "~0.50"),
}
MATRIX = tuple(PUBLISHED)
NONE = "  -  "   # an empty cell of the matrix table, as wide as a value
SOLVER = "newton-cholesky"   # LogisticRegression's defaults otherwise (L2, C = 1)
MAX_ITER = 200


@dataclass(frozen=True)
class GateResult:
    """The two gate AUCs and how many samples (balanced) they were computed on."""

    core_lr_auc: float
    radial_lr_auc: float
    n_samples: int
    core_interval: tuple[float, float] | None = None     # 95%, bootstrap over LRGs (when asked)
    radial_interval: tuple[float, float] | None = None
    # The published method's values (plain StratifiedKFold, no groups), when asked: for comparison only.
    core_lr_auc_ungrouped: float | None = None
    radial_lr_auc_ungrouped: float | None = None
    # The largest |radial feature| in the sample: ~1e-4 on residual inputs (the ring medians are
    # subtracted), where the radial probe cannot tell the classes apart whatever the data hold.
    radial_feature_max_abs: float | None = None


def balanced_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a random n/2 positives and n/2 negatives (fewer if a class is short).

    Random with a fixed seed, never "the first N": a manifest sorted by label would
    otherwise give one class and a meaningless AUC.
    """
    labels = np.asarray(labels)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    k = min(n // 2, len(pos), len(neg))
    if k == 0:
        raise ValueError(f"a balanced gate sample needs both classes; found {len(pos)} positives "
                         f"and {len(neg)} negatives")
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(pos, k, replace=False), rng.choice(neg, k, replace=False)]))


def core_box_slice(size: int, box: int) -> slice:
    """Rows (and columns) of the central box: centre pixel size // 2, e.g. 26:36 for 10 on 63 px.

    An even box on an odd stamp cannot be symmetric: it takes one more pixel before the centre.
    """
    start = size // 2 - box // 2
    return slice(start, start + box)


def core_features(images: np.ndarray, core_box: int = 10, mask_radius: int = 0) -> np.ndarray:
    """(N, 3·box·box) float64: the central box of each band, masked pixels (r < R) set to 0."""
    size = images.shape[-1]
    sl = core_box_slice(size, core_box)
    box = np.asarray(images[:, :, sl, sl], dtype=np.float64)
    if mask_radius > 0:
        box = box * (radius_map(size)[sl, sl] >= mask_radius)
    return box.reshape(len(box), -1)


RADIAL_CHUNK = 2048


def radial_features(images: np.ndarray, mask_radius: int = 0, chunk: int = RADIAL_CHUNK) -> np.ndarray:
    """(N, 3·n_rings) float64: the per-band median radial profile, after masking r < R.

    Converted to float32 and masked `chunk` images at a time: a float32 copy of the whole
    sample would be 47.6 kB per image (4.8 GB for the final gate on 100k val images).
    """
    keep = radius_map(images.shape[-1]) >= mask_radius if mask_radius > 0 else None
    parts = []
    for start in range(0, len(images), chunk):
        x = np.asarray(images[start:start + chunk], dtype=np.float32)
        if keep is not None:
            x = x * keep
        parts.append(radial_profile(x).reshape(len(x), -1))
    if not parts:
        return radial_profile(np.asarray(images, dtype=np.float32)).reshape(0, -1).astype(np.float64)
    return np.concatenate(parts).astype(np.float64)


def cv_splits(labels: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 1337, *,
              grouped: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, test) index pairs of StratifiedGroupKFold(folds, shuffle, seed).

    Computed once per gate sample and shared by both gates: for ~1000 LRGs the split
    itself costs more than the ten logistic fits. `grouped=False`: plain
    StratifiedKFold(folds, shuffle, seed), the published method (rows of one LRG may sit on
    both sides of a fold).
    """
    labels = np.asarray(labels).astype(np.int64)
    if grouped:
        n_groups = len(np.unique(groups))
        if n_groups < folds:
            raise ValueError(f"grouped {folds}-fold CV needs at least {folds} LRGs in the gate sample, found "
                             f"{n_groups}; use more data (a larger split or sample)")
        cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = list(cv.split(np.zeros((len(labels), 1)), labels, groups))
    else:
        smallest = int(min(np.count_nonzero(labels == 1), np.count_nonzero(labels == 0)))
        if smallest < folds:
            raise ValueError(f"{folds}-fold CV needs at least {folds} samples of each class, found {smallest}")
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = list(cv.split(np.zeros((len(labels), 1)), labels))
    for train, _ in splits:
        if len(np.unique(labels[train])) < 2:
            raise ValueError("a CV training fold holds one class only; the gate sample is too small")
    return splits


def cv_auc(features: np.ndarray, labels: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """AUROC of out-of-fold probabilities of a standardised logistic regression over `splits`."""
    return float(roc_auc_score(np.asarray(labels).astype(np.int64), cv_scores(features, labels, splits)))


def cv_scores(features: np.ndarray, labels: np.ndarray,
              splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Out-of-fold probabilities of a standardised logistic regression over `splits`."""
    labels = np.asarray(labels).astype(np.int64)
    oof = np.empty(len(labels), dtype=np.float64)
    # One BLAS thread: on problems this small, thread start-up and contention with the
    # training process cost ~20× the arithmetic (measured 1.5 s vs 0.08 s for 5 folds).
    # Newton-Cholesky: neighbouring pixels are strongly correlated, lbfgs needs 200+
    # iterations on raw_robust cores; Newton needs ~6 and lands on the same optimum
    # (the same L2-penalised objective), more exactly.
    with threadpool_limits(limits=1, user_api="blas"):
        for train, test in splits:
            scaler = StandardScaler().fit(features[train])
            model = LogisticRegression(solver=SOLVER, max_iter=MAX_ITER)
            model.fit(scaler.transform(features[train]), labels[train])
            oof[test] = model.predict_proba(scaler.transform(features[test]))[:, 1]
    return oof


def shortcut_gates(images: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, n_samples: int = 2000,
                   folds: int = 5, seed: int = 1337, core_box: int = 10, mask_radius: int = 0,
                   intervals: bool = False, ungrouped: bool = False, draws: int = DEFAULT_DRAWS,
                   draws_seed: int = DEFAULT_SEED, device: Any = None) -> GateResult:
    """core_lr_auc and radial_lr_auc on a balanced random sample of `n_samples` preprocessed images.

    `intervals`: also their 95% intervals over LRGs: the AUROC of the fixed out-of-fold scores
    over `draws` resamples of the sample's LRGs (engine/data/bootstrap.py, the one bootstrap; the
    probes are not refitted per draw), on `device` (a torch device; default the CPU).
    `ungrouped`: also the published method's values, the same sample and features under plain
    StratifiedKFold (for comparison only; see the module docstring).
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if not (len(images) == len(labels) == len(groups)):
        raise ValueError(f"images ({len(images)}), labels ({len(labels)}) and groups ({len(groups)}) differ in length")
    idx = balanced_sample(labels, n_samples, seed)
    x = np.asarray(images[idx])
    y, g = labels[idx], groups[idx]
    splits = cv_splits(y, g, folds, seed)
    core_x, radial_x = core_features(x, core_box, mask_radius), radial_features(x, mask_radius)
    core = cv_scores(core_x, y, splits)
    radial = cv_scores(radial_x, y, splits)
    y64 = y.astype(np.int64)
    result = GateResult(float(roc_auc_score(y64, core)), float(roc_auc_score(y64, radial)), int(len(idx)),
                        radial_feature_max_abs=float(np.abs(radial_x).max()) if radial_x.size else None)
    if ungrouped:
        plain = cv_splits(y, g, folds, seed, grouped=False)
        result = replace(result, core_lr_auc_ungrouped=cv_auc(core_x, y, plain),
                         radial_lr_auc_ungrouped=cv_auc(radial_x, y, plain))
    if intervals and draws > 0:
        result = replace(result, core_interval=_interval_of(y64, core, g, draws, draws_seed, device),
                         radial_interval=_interval_of(y64, radial, g, draws, draws_seed, device))
    return result


def _interval_of(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray, draws: int,
                 seed: int, device: Any = None) -> tuple[float, float] | None:
    """The 95% interval over LRGs of the AUROC of fixed scores (None when too few draws hold both classes)."""
    from engine.data.bootstrap import LrgDraws   # torch, only when an interval is asked for

    lrg = LrgDraws(groups, draws, seed, device)
    found = lrg.interval(lrg.auroc(labels, scores))
    return (found.low, found.high) if found is not None else None


# ---------------------------------------------------------------------------
# Command line


def _run_one(args: argparse.Namespace, mode: str, preprocessing: str, mask_radius: int) -> tuple[GateResult, float]:
    from engine.data.load import load_split

    arrays = load_split(args.data_root, mode=mode, sample=args.sample, split=args.split,
                        preprocessing=preprocessing, settings=args.settings)
    started = time.perf_counter()
    result = shortcut_gates(arrays.images, arrays.labels, arrays.lrg_id, n_samples=args.n_samples,
                            folds=args.folds, seed=args.seed, core_box=args.core_box, mask_radius=mask_radius,
                            intervals=True, ungrouped=True, draws=args.draws, draws_seed=args.draws_seed)
    return result, time.perf_counter() - started


def format_row(mode: str, preprocessing: str, mask_radius: int, result: GateResult, seconds: float) -> str:
    published = PUBLISHED.get((mode, preprocessing, mask_radius))
    pub = f"{published[0]:.3f} / {published[1]}" if published else "-"
    return (f"| {mode:<8} | {preprocessing:<10} | {mask_radius:>4} | {result.n_samples:>5} | "
            f"{result.core_lr_auc:.3f} | {_interval(result.core_interval)} | "
            f"{result.radial_lr_auc:.3f} | {_interval(result.radial_interval)} | "
            f"{fixed(result.core_lr_auc_ungrouped, 3, NONE)} / {fixed(result.radial_lr_auc_ungrouped, 3, NONE)} | "
            f"{pub:<14} | {seconds:5.2f} |")


def _interval(interval: tuple[float, float] | None) -> str:
    return f"{interval[0]:.3f}–{interval[1]:.3f}" if interval else f"{'-':<11}"


HEADER = ("| mode     | preproc.   | mask |     n | core  | core 95%    | radial | radial 95%  "
          "| ungrouped core / radial | published      | gate s |\n"
          "|----------|------------|------|-------|-------|-------------|--------|-------------"
          "|-------------------------|----------------|--------|")


def _settings_from_config(args: argparse.Namespace) -> None:
    """Fill args.settings (the data layer's) and the gate options left out, from the config when there is one.

    The same experiments.toml as training: its sample, unpaired method, bad-row limit, gate sample
    size, folds, seed and core box, so the command line measures what a run's gates measure.
    """
    from engine.data.settings import settings_for_command

    config, settings = settings_for_command(args.config, args.host)
    args.settings = settings.with_cache_dir(args.cache_dir)
    m = config.metrics if config is not None else None
    for option, key, default in (("n_samples", "gate_n_samples", 2000), ("folds", "gate_cv_folds", 5),
                                 ("seed", "gate_seed", 1337), ("core_box", "core_box", 10),
                                 ("draws", "bootstrap_draws", DEFAULT_DRAWS),
                                 ("draws_seed", "bootstrap_seed", DEFAULT_SEED)):
        if getattr(args, option) is None:
            setattr(args, option, getattr(m, key) if m is not None else default)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.gates", description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--mode", choices=DATA_MODES, default="paired")
    parser.add_argument("--preprocessing", choices=PREPROCESSINGS, default="residual")
    parser.add_argument("--mask-radius", type=int, default=0, help="zero pixels with r < R before the features")
    parser.add_argument("--split", choices=SPLITS, default="val")
    parser.add_argument("--sample", choices=SAMPLES, default="10pct")
    parser.add_argument("--matrix", action="store_true",
                        help="paired/unpaired × raw/residual, plus unpaired+residual with R=7, beside SCIENCE.md's numbers")
    parser.add_argument("--n-samples", type=int, default=None, help="default: metrics.gate_n_samples, else 2000")
    parser.add_argument("--folds", type=int, default=None, help="default: metrics.gate_cv_folds, else 5")
    parser.add_argument("--seed", type=int, default=None, help="default: metrics.gate_seed, else 1337")
    parser.add_argument("--core-box", type=int, default=None, help="default: metrics.core_box, else 10")
    parser.add_argument("--draws", type=int, default=None,
                        help=f"bootstrap draws of LRGs for the 95%% intervals (default: metrics.bootstrap_draws, "
                             f"else {DEFAULT_DRAWS})")
    parser.add_argument("--draws-seed", type=int, default=None, help="the draws' seed (default: metrics.bootstrap_seed)")
    parser.add_argument("--cache-dir", help="manifests and stamp caches (default: the host's cache_dir, else "
                        f"DATA_ROOT/{DEFAULT_NAME} where writable; engine/data/cachedir.py)")
    parser.add_argument("--config", help="experiments.toml whose sampling, unpaired method and bad-row limit "
                        "pick the data (default: ./experiments.toml when present)")
    parser.add_argument("--host", help="also take this host's cache_dir and its dataset's unpaired_manifest")
    parser.add_argument("--record", action="store_true",
                        help="with --matrix: also write the matrix and its ordering verdict as data-check.json in "
                        "the manifest set's folder (lenstui's plan reads it for step 1.3)")
    args = parser.parse_args(argv)
    if args.record and not args.matrix:
        parser.error("--record goes with --matrix (it records the data check)")
    runs = MATRIX if args.matrix else ((args.mode, args.preprocessing, args.mask_radius),)
    try:
        _settings_from_config(args)
    except ValueError as exc:   # ConfigError: the file, the key, what was expected
        print(f"error: {exc}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    s = args.settings
    print(f"shortcut gates on {args.data_root}: split {args.split}, sample {args.sample} (fraction "
          f"{s.sample_fraction:g}, seed {s.seed}, unpaired {s.unpaired_manifest or s.unpaired_method}; settings "
          f"from {s.source}), {args.folds}-fold StratifiedGroupKFold by LRG, seed {args.seed}; 95% intervals "
          f"from {args.draws} bootstrap draws of LRGs. 'ungrouped': the same probe under plain "
          f"StratifiedKFold, the published method's folds, which put an LRG's rows on both sides "
          f"of a fold (for comparison only)")
    print(HEADER)
    cores: dict[tuple[str, str, int], float] = {}
    try:
        for mode, preprocessing, radius in runs:
            result, seconds = _run_one(args, mode, preprocessing, radius)
            cores[(mode, preprocessing, radius)] = result.core_lr_auc
            print(format_row(mode, preprocessing, radius, result, seconds), flush=True)
        if args.matrix:
            ok, words = ordering_verdict(cores)
            print(f"ordering: {'as expected' if ok else 'NOT as expected'}: {words}")
        if args.record:
            path = _record(args, cores, ok, words)
            print(f"recorded: {path}")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exitcodes.BAD_INPUT
    return exitcodes.OK


def ordering_verdict(cores: dict[tuple[str, str, int], float]) -> tuple[bool, str]:
    """Whether the matrix's core AUCs are ordered as SCIENCE.md's published matrix is: residual
    preprocessing removes most of the core signal raw stamps carry (each mode), and masking R = 7
    removes what is left in the unpaired residual view (within 0.02). (ok, the comparisons in words.)"""
    checks = []
    for mode in ("paired", "unpaired"):
        raw, res = cores[(mode, "raw_robust", 0)], cores[(mode, "residual", 0)]
        checks.append((raw > res, f"{mode}: raw {raw:.3f} > residual {res:.3f}"))
    res, masked = cores[("unpaired", "residual", 0)], cores[("unpaired", "residual", 7)]
    checks.append((masked <= res + 0.02, f"unpaired residual R=7 {masked:.3f} ≤ R=0 {res:.3f} (+0.02)"))
    failed = [w for ok, w in checks if not ok]
    return not failed, "; ".join(w for _, w in checks) + (f" (fails: {'; '.join(failed)})" if failed else "")


def _record(args: argparse.Namespace, cores: dict[tuple[str, str, int], float], ok: bool, words: str) -> str:
    import json

    from engine.data.cachedir import resolve_cache_dir
    from engine.data.manifest import DATA_CHECK, build_manifests
    from engine.files import atomic_write_text, timestamp

    s = args.settings
    out = resolve_cache_dir(args.data_root, s.cache_dir, setting=s.cache_dir_setting).manifests
    ms = build_manifests(args.data_root, out, **s.manifest_options())
    path = ms.directory / DATA_CHECK
    atomic_write_text(path, json.dumps({
        "ordering_ok": ok, "ordering": words, "split": args.split, "sample": args.sample, "n_samples": args.n_samples,
        "core_lr_auc": {f"{m}/{p}/R{r}": round(v, 4) for (m, p, r), v in cores.items()},
        "written_at": timestamp()}, indent=1))
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
