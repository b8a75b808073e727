"""Benchmark 1, the data path alone (no model): a per-sample pipeline like the public work's against ours.

naive     a torch DataLoader over a Dataset that, for every sample of every epoch, decodes
          its NPZ blob (held in memory as read from the Parquet shard), preprocesses it
          (residual) and flips/rotates it on the CPU with NumPy; default collation.
ours      decode + preprocess once into the stamp cache (engine.data.load_split), then the
          split as one resident float16 tensor and, per batch,
          engine.training.augment.training_batch: on the CPU one strided copy per image that
          reads it flipped/rotated in its 16-bit form, one vectorised cast to float32,
          and the core mask written to the disk's pixels only. Two call forms:
            gather first   training_batch(images.index_select(0, idx), ...), the
                           way engine/training/train.py has called it;
            gather fused   training_batch(images, index=idx, ...): the per-image
                           copy reads straight from the resident split, one pass less.
floor     the gather and the float32 cast alone, no flips, no mask: the least any path
          must do to hand the model float32 batches (the ceiling for ours).
before    the same batches, bit for bit (every batch of ours' first epoch, in both call
          forms, is checked against it), made the way the engine made them up to commit
          fe64e86: advanced indexing, ~12 full-batch torch.where/flip/rot90 passes and a
          whole-image mask. Kept here as the baseline and the reference (`before_batch`).

All serve the same examples (the paired view's train split of one synthetic dataset) as
float32 batches of experiments.toml's batch size (128) for one epoch, in one process, one
after the other. The naive side uses our own decoder and preprocessing, called per
sample, so the ratio measures the structure (once vs every epoch, batched vs per
sample), not a slower re-implementation. samples/s is per wall second; samples per CPU
second (this process and its loader workers) is steadier on a shared machine.

    .venv/bin/python -m bench.bench_datapath [--quick] [--workers 0,2] [--threads 1] [--json FILE]
"""

from __future__ import annotations

import random
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch

from bench.common import REPO, Report, bench_dataset, median, parser, peak_rss_mib, progress, ratio, set_threads
from engine.training.augment import core_disk, seeded_generator, training_batch
from engine.config import AugmentationConfig, Masking, load_config
from engine.data.load import load_split
from engine.data.manifest import build_manifests
from engine.data.preprocess import preprocess
from engine.data.shards import BLOB_COLUMNS, crop, decode_blob

SEED = 42
PLAN_EPOCHS = 50
MASKED = ("A1", "B2", "B3")   # no mask; stochastic R=5 p=0.5; a schedule (R=7 p=0.7 in epoch 0)


# ---------------------------------------------------------------------------
# The naive pipeline


class NaiveDataset(torch.utils.data.Dataset):
    """One example per manifest entry, decoded, preprocessed and augmented on every access."""

    def __init__(self, data_root: Path, entries) -> None:
        # The blobs as Python bytes, read once: like a DataFrame from pd.read_parquet, the
        # public work's starting point. Reading is not what is measured; decoding is.
        self.blobs: dict[tuple[str, str], list[bytes]] = {}
        for shard in entries["shard"].unique():
            table = pq.read_table(Path(data_root) / shard, columns=list(BLOB_COLUMNS.values()))
            for kind, column in BLOB_COLUMNS.items():
                self.blobs[(shard, kind)] = table.column(column).to_pylist()
        self.shard = entries["shard"].to_numpy()
        self.row = entries["row"].to_numpy()
        self.kind = entries["blob"].to_numpy()
        self.label = entries["label"].to_numpy().astype(np.float32)

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        stamp = crop(decode_blob(self.blobs[(self.shard[i], self.kind[i])][int(self.row[i])]))
        x = preprocess(stamp[None], "residual")[0]
        if random.random() < 0.5:
            x = x[:, :, ::-1]
        if random.random() < 0.5:
            x = x[:, ::-1, :]
        x = np.rot90(x, k=random.randrange(4), axes=(1, 2))
        return torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(self.label[i])


@dataclass(frozen=True)
class Clock:
    """Wall and CPU seconds (this process plus its finished children: the loader's workers)."""

    wall: float
    cpu: float

    @staticmethod
    def now() -> "Clock":
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return Clock(time.perf_counter(), me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime)

    def __sub__(self, other: "Clock") -> "Clock":
        return Clock(self.wall - other.wall, self.cpu - other.cpu)


def naive_epoch(dataset: NaiveDataset, workers: int, epoch: int, batch_size: int) -> Clock:
    """One epoch of the naive DataLoader (its workers' start-up included: every epoch pays it)."""
    random.seed(epoch)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         generator=torch.Generator().manual_seed(epoch))
    sink = 0.0
    start = Clock.now()
    for x, y in loader:
        sink += float(x[0, 0, 31, 31]) + float(y[0])   # touch every batch
    del loader   # the workers exit and are reaped, so their CPU time is counted
    return Clock.now() - start


# ---------------------------------------------------------------------------
# Our pipeline, and as it was before the in-place data path

BatchMaker = Callable[..., torch.Tensor]


def gathered_batch(images: torch.Tensor, idx: torch.Tensor, *, epoch: int, batch: int, aug: AugmentationConfig,
                   masking: Masking) -> torch.Tensor:
    """A training batch with the gather first, then training_batch (engine/training/train.py's call until now)."""
    x, _ = training_batch(images.index_select(0, idx), seed=SEED, epoch=epoch, batch=batch, aug=aug,
                          masking=masking)
    return x


def fused_batch(images: torch.Tensor, idx: torch.Tensor, *, epoch: int, batch: int, aug: AugmentationConfig,
                masking: Masking) -> torch.Tensor:
    """A training batch with the gather fused into training_batch's copy (index=)."""
    x, _ = training_batch(images, index=idx, seed=SEED, epoch=epoch, batch=batch, aug=aug, masking=masking)
    return x


def floor_batch(images: torch.Tensor, idx: torch.Tensor, **_: object) -> torch.Tensor:
    """No augmentation at all, only the gather and the float32 cast: what any path must at least do."""
    return images.index_select(0, idx).float()


OURS = {"gather first": gathered_batch, "gather fused": fused_batch}
# Our epochs take ~40 ms: many of them give a steadier median on a shared machine.
OUR_EPOCHS_PER_BEFORE = 10


def before_batch(images: torch.Tensor, idx: torch.Tensor, *, epoch: int, batch: int, aug: AugmentationConfig,
                 masking: Masking) -> torch.Tensor:
    """The same batch (same draws, same pixels) as engine/training/train.py made it up to commit fe64e86.

    Advanced indexing for the gather, ~12 full-batch torch.where/flip/rot90 passes, and a
    (B, 1, H, W) mask over the whole image: kept here as the measured baseline and as the
    reference every batch of the engine's first epoch is checked against.
    """
    radius, p = masking.at_epoch(epoch)
    gen = seeded_generator(images.device, SEED, epoch, batch)
    x = images[idx].float()
    n = x.shape[0]
    hflip = torch.rand(n, device=x.device, generator=gen) < aug.hflip_p
    vflip = torch.rand(n, device=x.device, generator=gen) < aug.vflip_p
    k = torch.randint(0, 4, (n,), device=x.device, generator=gen)
    x = torch.where(hflip.view(-1, 1, 1, 1), x.flip(-1), x)
    x = torch.where(vflip.view(-1, 1, 1, 1), x.flip(-2), x)
    if aug.rot90:
        out = x
        for turns in (1, 2, 3):
            out = torch.where((k == turns).view(-1, 1, 1, 1), torch.rot90(x, turns, dims=(-2, -1)), out)
        x = out
    coins = torch.rand(n, device=x.device, generator=gen) < p
    if radius > 0 and p > 0:
        disk = core_disk(x.shape[-2], x.shape[-1], float(radius), str(x.device))
        x = x.masked_fill(coins.view(-1, 1, 1, 1) & disk, 0)
    return x


def our_epoch(make_batch: BatchMaker, images: torch.Tensor, labels: torch.Tensor, epoch: int, batch_size: int,
              aug: AugmentationConfig, masking: Masking, check: BatchMaker | None = None) -> Clock:
    """One epoch of our path: permutation, gather, batched augmentation (as engine/training/train.py's loop).

    `check`, if given, makes each batch again, untimed, and the two must be identical.
    """
    n = images.shape[0]
    n_batches = n // batch_size + (1 if n % batch_size > 1 else 0)
    sink, untimed = 0.0, Clock(0.0, 0.0)
    start = Clock.now()
    order = torch.randperm(n, generator=seeded_generator(images.device, SEED, epoch, "order"))
    for b in range(n_batches):
        idx = order[b * batch_size:(b + 1) * batch_size]
        x = make_batch(images, idx, epoch=epoch, batch=b, aug=aug, masking=masking)
        y = labels[idx]
        sink += float(x[0, 0, 31, 31]) + float(y[0])
        if check is not None:
            t = Clock.now()
            want = check(images, idx, epoch=epoch, batch=b, aug=aug, masking=masking)
            if not torch.equal(x, want):
                raise AssertionError(f"batch {b} of epoch {epoch}: engine.training.augment differs from the reference (before_batch)")
            untimed = Clock(untimed.wall + (Clock.now() - t).wall, untimed.cpu + (Clock.now() - t).cpu)
    spent = Clock.now() - start
    return Clock(spent.wall - untimed.wall, spent.cpu - untimed.cpu)


def typical(clocks: Sequence[Clock]) -> Clock:
    """The median wall and median CPU of several epochs."""
    return Clock(median([c.wall for c in clocks]), median([c.cpu for c in clocks]))


# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--workers", default=None,
                   help="naive DataLoader worker counts to measure, comma-separated (default 0,2; --quick: 0)")
    p.add_argument("--epochs", type=int, default=None, help="timed epochs of the before path (default 2); "
                   f"ours gets {OUR_EPOCHS_PER_BEFORE}x as many")
    args = p.parse_args(argv)
    # One intra-op thread unless told otherwise: the naive loader's main process is one thread
    # too, and on this shared machine two threads measured slower than one for these ops.
    set_threads(args.threads or 1)
    report = Report("bench_datapath", argv)
    workers = [int(w) for w in (args.workers or ("0" if args.quick else "0,2")).split(",")]
    epochs = args.epochs or 2
    root = bench_dataset(args)
    config = load_config(REPO / "experiments.toml")
    aug, batch_size = config.augmentation, config.training.batch_size

    with tempfile.TemporaryDirectory(prefix="bench-datapath-") as tmp:
        cache = Path(tmp) / "cache"
        started = time.perf_counter()
        entries = build_manifests(root, cache / "manifests").entries("paired", "full", "train")
        manifest_s = time.perf_counter() - started
        n = len(entries)
        progress(f"datapath: {n} examples (the paired train split of {root})")

        # Ours, once: decode + preprocess into a cold stamp cache.
        started = time.perf_counter()
        arrays = load_split(root, mode="paired", sample="full", split="train", preprocessing="residual",
                            cache_dir=cache)
        build_s = time.perf_counter() - started
        images = torch.from_numpy(np.array(arrays.images, dtype=np.float16))
        labels = torch.from_numpy(arrays.labels.astype(np.float32))
        if len(images) != n:
            raise SystemExit(f"the stamp cache holds {len(images)} examples, the manifest {n}: bad rows?")
        progress(f"datapath: stamp cache built in {build_s:.1f}s ({n / build_s:,.0f} samples/s, once)")

        rows: dict[str, list[tuple[str, Clock, int]]] = {"naive": [], "before": [], "floor": [], "ours": []}
        ours_by_form: dict[str, list[Clock]] = {form: [] for form in OURS}
        for name in MASKED:
            masking = config.experiments[name].masking
            before_batch(images, torch.arange(min(batch_size, n)), epoch=0, batch=0, aug=aug, masking=masking)  # warm
            clocks = [our_epoch(before_batch, images, labels, e, batch_size, aug, masking) for e in range(epochs)]
            rows["before"].append((f"before (where form), mask {masking.describe()} ({name})", typical(clocks),
                                   len(clocks)))
            # The two call forms take turns epoch by epoch, so load spikes hit both alike. Epoch 0
            # of each is checked batch by batch against the reference, then dropped.
            clocks_by_form: dict[str, list[Clock]] = {form: [] for form in OURS}
            for e in range(OUR_EPOCHS_PER_BEFORE * epochs + 1):
                for form, make_batch in OURS.items():
                    clock = our_epoch(make_batch, images, labels, e, batch_size, aug, masking,
                                      check=before_batch if e == 0 else None)
                    if e > 0:
                        clocks_by_form[form].append(clock)
            for form, clocks in clocks_by_form.items():
                rows["ours"].append((f"ours, {form}, mask {masking.describe()} ({name})", typical(clocks),
                                     len(clocks)))
                ours_by_form[form].append(typical(clocks))
            progress(f"datapath: {name}: before {n / rows['before'][-1][1].wall:,.0f}, ours "
                     + ", ".join(f"{form} {n / c[-1].wall:,.0f}" for form, c in ours_by_form.items())
                     + " samples/s")
        clocks = [our_epoch(floor_batch, images, labels, e, batch_size, aug, config.experiments["A1"].masking)
                  for e in range(OUR_EPOCHS_PER_BEFORE * epochs)]
        rows["floor"].append(("floor: gather + float32 cast only, no flips, no mask", typical(clocks), len(clocks)))

        dataset = NaiveDataset(root, entries)
        for w in workers:
            clock = naive_epoch(dataset, w, epoch=0, batch_size=batch_size)
            rows["naive"].append((f"naive per-sample DataLoader, workers={w}", clock, 1))
            progress(f"datapath: naive workers={w}: {n / clock.wall:,.0f} samples/s")

    table = report.table(f"Data path, one epoch of {n:,} examples (batch {batch_size}, float32 out, "
                         f"{torch.get_num_threads()} torch thread(s))",
                         ["pipeline", "epoch s", "samples/s", "samples/CPU-s", "epochs timed"])
    for group in ("naive", "before", "floor", "ours"):
        for label, clock, count in rows[group]:
            table.add(label, clock.wall, n / clock.wall, n / clock.cpu if clock.cpu > 0 else None, count)

    naive = min((c for _, c, _ in rows["naive"]), key=lambda c: c.wall)
    # "ours" is the fused form, the call engine/training/train.py is to make; the gather-first form is reported beside it.
    ours, ours_worst = ours_by_form["gather fused"][0], max(ours_by_form["gather fused"], key=lambda c: c.wall)
    gathered = ours_by_form["gather first"][0]
    old, old_worst = rows["before"][0][1], max((c for _, c, _ in rows["before"]), key=lambda c: c.wall)
    floor = rows["floor"][0][1]
    once = report.table(f"The one-off cost of our path (a cold stamp cache), and {PLAN_EPOCHS} epochs",
                        ["step", "seconds", "samples/s"])
    once.add("manifests (index only, all splits)", manifest_s, None)
    once.add("stamp cache: decode + residual once (manifests included)", build_s, n / build_s)
    totals = {"naive (best worker count)": PLAN_EPOCHS * naive.wall,
              "before (cold cache + slowest mask)": build_s + PLAN_EPOCHS * old_worst.wall,
              "ours (cold cache + slowest mask)": build_s + PLAN_EPOCHS * ours_worst.wall}
    for label, seconds in totals.items():
        once.add(f"{PLAN_EPOCHS} epochs, {label}", seconds, PLAN_EPOCHS * n / seconds)

    v = report.values
    v.update(examples=n, threads=torch.get_num_threads(), batch_size=batch_size, cache_build_s=build_s,
             naive_samples_per_s=n / naive.wall, ours_samples_per_s=n / ours.wall,
             ours_gather_first_samples_per_s=n / gathered.wall, floor_samples_per_s=n / floor.wall,
             before_samples_per_s=n / old.wall, ours_worst_mask_samples_per_s=n / ours_worst.wall,
             before_worst_mask_samples_per_s=n / old_worst.wall,
             speedup=ratio(naive.wall, ours.wall), speedup_cpu=ratio(naive.cpu, ours.cpu),
             before_speedup=ratio(naive.wall, old.wall), before_speedup_cpu=ratio(naive.cpu, old.cpu),
             ours_vs_before=ratio(old.wall, ours.wall), ours_vs_before_cpu=ratio(old.cpu, ours.cpu),
             ours_vs_before_worst_mask=ratio(old_worst.wall, ours_worst.wall),
             fused_vs_gather_first=ratio(gathered.wall, ours.wall), ours_vs_floor=ratio(floor.wall, ours.wall),
             speedup_50_epochs=ratio(totals[list(totals)[0]], totals[list(totals)[2]]),
             before_speedup_50_epochs=ratio(*[totals[k] for k in list(totals)[:2]]),
             peak_rss_mib=peak_rss_mib())
    report.note(f"per epoch, wall: ours {v['speedup']:.1f}x the best naive, before {v['before_speedup']:.1f}x; "
                f"per CPU second: {v['speedup_cpu']:.1f}x and {v['before_speedup_cpu']:.1f}x")
    report.note(f"ours vs before, side by side: {v['ours_vs_before']:.1f}x per wall second, "
                f"{v['ours_vs_before_cpu']:.1f}x per CPU second (no mask); {v['ours_vs_before_worst_mask']:.1f}x "
                "wall with the slowest mask")
    report.note(f"ours (gather fused) is {v['fused_vs_gather_first']:.2f}x the gather-first call and "
                f"{v['ours_vs_floor']:.2f}x the floor (gather + cast, no augmentation), no mask")
    report.note(f"over {PLAN_EPOCHS} epochs with our cold cache build: ours {v['speedup_50_epochs']:.1f}x naive, "
                f"before {v['before_speedup_50_epochs']:.1f}x")
    report.note(f"torch intra-op threads: {torch.get_num_threads()}, batch {batch_size}; the machine is shared, so "
                "compare ratios and samples per CPU second rather than absolute rates")
    report.goal("ours / naive per epoch (engine.training.augment today)", v["speedup"], 20, unit="x")
    report.goal("ours samples/s (engine.training.augment today)", v["ours_samples_per_s"], 50_000)
    report.goal("ours samples/s, gather first (engine/training/train.py's call until now)",
                v["ours_gather_first_samples_per_s"], 50_000)
    report.finish(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
