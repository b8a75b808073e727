"""The one config loader: `experiments.toml` -> typed, frozen objects.

Torch-free and NumPy-free: `lenstui` imports it on a laptop. Every problem is a
`ConfigError` naming the file, the key path, what was found and what was
expected; the loader never returns a half-valid config.

Why one file of ~800 lines: every table of experiments.toml has its dataclass and its checks
side by side, and the checks share one way of naming the file and the key path; split by
table, an error's wording and the key it names would drift apart across files.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 hosts only
    import tomli as tomllib

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SPLITS = ("train", "val", "test")   # a data root holds one folder of shards per split
DATA_MODES = ("paired", "unpaired")
PREPROCESSINGS = ("raw_robust", "residual")
SAMPLES = ("10pct", "full")
MASK_KINDS = ("none", "stochastic", "scheduled")
STEMS = ("stock", "cifar")
TRANSPORTS = ("local", "ssh")
DATASET_KINDS = ("shards", "synthetic")
UNPAIRED_METHODS = ("origin", "per_cell")   # engine.manifest: how the unpaired view is drawn
BAD_ROW_LIMIT_KEY = "data.bad_row_limit"     # messages about bad rows name it
DEFAULT_BAD_ROW_LIMIT = 0.001
CORE_GATE_READINGS = ("masked", "unmasked")
# The lens catalogue a synthetic dataset with selected lens hosts writes beside its shards
# (engine/synthetic/lens_catalogue.py); its dataset names it as `unpaired_manifest`.
LENS_CATALOGUE = "lens-catalogue"
DEFAULT_MAX_RUNS_PER_GPU = 3   # [hosts.X] max_runs_per_gpu: lenstui/scheduler.py, docs/PLAN.md
# The 95% intervals over LRGs (engine/data/bootstrap.py): resamples, and their seed (a rerun gives the
# same interval). docs/PERFORMANCE.md measures what 1,000 draws cost at the end of training.
DEFAULT_BOOTSTRAP_DRAWS = 1000
DEFAULT_BOOTSTRAP_SEED = 20260206
MAX_REPLICATES = 20       # seeds per experiment the config accepts (each is a full training run)


class ConfigError(ValueError):
    """A configuration problem, worded for the person who edits the file."""

    def __init__(self, source: str, key: str, problem: str, hint: str = "") -> None:
        self.source, self.key, self.problem, self.hint = source, key, problem, hint
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + problem + (f" ({hint})" if hint else ""))


# ---------------------------------------------------------------------------
# The typed configuration


@dataclass(frozen=True)
class TrainingConfig:
    """Plan §4.1–4.2."""

    architecture: str
    stem: str
    in_channels: int
    image_size: int
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    optimizer: str
    scheduler: str
    early_stopping_patience: int
    mixed_precision: bool
    seed: int
    replicates: int = 1       # seeds per experiment: the plan's seed, then seed+1, ... (issue 19)


@dataclass(frozen=True)
class AugmentationConfig:
    """Plan §4.3: flips and rot90, per sample, fresh every epoch."""

    hflip_p: float
    vflip_p: float
    rot90: bool


@dataclass(frozen=True)
class SamplingConfig:
    """Plan §2: how the unpaired view is drawn (§2.1) and the stratified sample (§2.2)."""

    sample_fraction: float
    seed: int
    stratify: tuple[str, ...]
    unpaired_method: str = "origin"


@dataclass(frozen=True)
class DataConfig:
    """How shards become examples: the share of a split that may be dropped as bad rows."""

    bad_row_limit: float = DEFAULT_BAD_ROW_LIMIT


@dataclass(frozen=True)
class MetricsConfig:
    """Plan §5: gate cadence and sample, θ_E bins, mask radii."""

    gate_every_epochs: int
    gate_n_samples: int
    gate_cv_folds: int
    gate_seed: int
    core_box: int
    thetae_bins: tuple[float, ...]
    thetae_min_positives: int
    sensitivity_radii: tuple[int, ...]
    core_reliance_radius: int
    bootstrap_draws: int = DEFAULT_BOOTSTRAP_DRAWS   # 0: no intervals
    bootstrap_seed: int = DEFAULT_BOOTSTRAP_SEED

    @property
    def thetae_bin_pairs(self) -> tuple[tuple[float, float], ...]:
        """The bins as (low, high) pairs, low inclusive, high exclusive."""
        edges = self.thetae_bins
        return tuple(zip(edges[:-1], edges[1:]))


@dataclass(frozen=True)
class Band:
    """A PASS/WARN/FAIL band of plan §6.

    Lower-is-better bands PASS strictly below `pass_limit` and FAIL strictly
    above `fail_limit`; higher-is-better bands mirror that. Values on a bound
    or between the bounds are WARN (§6.3 names only PASS and FAIL).
    """

    name: str
    higher_is_better: bool
    pass_limit: float
    fail_limit: float

    def classify(self, value: float | None) -> str | None:
        """PASS, WARN or FAIL for `value`; None when there is no value."""
        if value is None or value != value:  # None or NaN
            return None
        if self.higher_is_better:
            if value > self.pass_limit:
                return "PASS"
            return "FAIL" if value < self.fail_limit else "WARN"
        if value < self.pass_limit:
            return "PASS"
        return "FAIL" if value > self.fail_limit else "WARN"

    def describe(self) -> str:
        """The rule in words, e.g. 'PASS < 0.60, WARN 0.60–0.65, FAIL > 0.65'."""
        p, f = self.pass_limit, self.fail_limit
        if self.higher_is_better:
            return f"PASS > {p:.2f}, WARN {f:.2f}–{p:.2f}, FAIL < {f:.2f}"
        return f"PASS < {p:.2f}, WARN {p:.2f}–{f:.2f}, FAIL > {f:.2f}"


@dataclass(frozen=True)
class Thresholds:
    """Plan §6.1–6.3."""

    core_lr_auc: Band
    radial_lr_auc: Band
    core_reliance: Band
    thetae_min_bin_auroc: Band
    thetae_max_spread: Band


@dataclass(frozen=True)
class Targets:
    """Plan §6.4: overall model quality."""

    val_auroc: float
    test_auroc: float


@dataclass(frozen=True)
class DecisionConfig:
    """How the §6 verdicts and the §10 tree read the plan where it can be read two ways.

    `variant_core_gate`: for an experiment that masks the core during training, the core gate
    its verdict and the masking sub-tree read: "masked" (the probe on val images masked at the
    experiment's radius, the published "+R7" row's definition; the default) or "unmasked" (the
    probe on the data as stored, which B1-B4 share). docs/DECISIONS.md says why.
    """

    variant_core_gate: str = "masked"


@dataclass(frozen=True)
class MaskStep:
    """From `from_epoch` on (0-based), mask radius `radius` px with probability `p`."""

    from_epoch: int
    radius: int
    p: float


@dataclass(frozen=True)
class Masking:
    """Training-time core masking: none, stochastic, or a schedule of steps."""

    kind: str
    steps: tuple[MaskStep, ...] = ()

    def at_epoch(self, epoch: int) -> tuple[int, float]:
        """(radius, probability) in force at 0-based `epoch`; (0, 0.0) for none."""
        radius, p = 0, 0.0
        for step in self.steps:
            if epoch >= step.from_epoch:
                radius, p = step.radius, step.p
        return radius, p

    def describe(self) -> str:
        """Short human form for tables: 'none', 'R=5 p=0.5', 'sched 7/5/3'."""
        if self.kind == "none":
            return "none"
        if self.kind == "stochastic":
            s = self.steps[0]
            return f"R={s.radius} p={s.p:g}"
        return "sched " + "/".join(str(s.radius) for s in self.steps)


@dataclass(frozen=True)
class Experiment:
    """One row of the plan's matrix (§3), with its base resolved for Phase 4."""

    id: str
    phase: int
    data_mode: str
    preprocessing: str
    sample: str
    masking: Masking
    purpose: str = ""
    base: str | None = None
    replicates: int = 1       # seed replicates: its own `replicates`, else [training] replicates


@dataclass(frozen=True)
class Dataset:
    """Where a host's shards live; `root` may be relative to the host's work_dir.

    `unpaired_manifest`: an unpaired manifest written by the published pipeline (its v1 file
    or v2 folder) that the unpaired views take their rows from, so B-runs use the same LRG
    halves as the runs made with it (engine.manifest, "Importing").
    """

    name: str
    kind: str
    root: str
    scale: float | None = None
    seed: int | None = None
    unpaired_manifest: str | None = None
    # A synthetic dataset's departures from the twin's priors (engine/synthetic/priors.py, `Priors`):
    # field name -> value, e.g. {"lens_host_luminosity_weight": 2.0}. engine.synth checks the names.
    priors: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Host:
    """How to reach a machine and where its runs and data live."""

    name: str
    transport: str
    enabled: bool
    work_dir: str
    python: str
    runs_root: str
    dataset: str
    ssh_host: str | None = None
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    cache_dir: str | None = None   # manifests and stamp caches; default <data root>/.lenstui-cache where writable
    data_root: str | None = None    # where this host keeps its dataset, when not at the dataset's `root`
    # How many runs lenstui's scheduler puts on one GPU of this host (a host without GPUs: on its
    # CPU) at once; docs/PLAN.md says why 3 (lenstui/scheduler.py).
    max_runs_per_gpu: int = DEFAULT_MAX_RUNS_PER_GPU

    def resolve(self, path: str) -> str:
        """`path` as the host sees it: relative paths are under work_dir."""
        if path.startswith("/") or path.startswith("~"):
            return path
        base = self.work_dir.rstrip("/") or "/"
        return path if base == "." else f"{base}/{path}"

    @property
    def runs_root_path(self) -> str:
        return self.resolve(self.runs_root)


@dataclass(frozen=True)
class Config:
    """The whole plan. Mappings keep the file's order and cannot be mutated."""

    source: str
    sha256: str
    plan_name: str
    training: TrainingConfig
    augmentation: AugmentationConfig
    sampling: SamplingConfig
    metrics: MetricsConfig
    thresholds: Thresholds
    targets: Targets
    experiments: Mapping[str, Experiment] = field(repr=False)
    datasets: Mapping[str, Dataset] = field(repr=False)
    hosts: Mapping[str, Host] = field(repr=False)
    data: DataConfig = DataConfig()
    decision: DecisionConfig = DecisionConfig()

    def experiment(self, exp_id: str, base: str | None = None) -> Experiment:
        """The experiment `exp_id`; `base` re-points a Phase-4 run at another config."""
        exp = _lookup(self.experiments, exp_id, self.source, "experiment")
        if base is None:
            return exp
        if exp.base is None:
            raise ConfigError(self.source, f"experiments.{exp_id}",
                              "only a Phase-4 experiment (one with `base`) takes a base",
                              f"drop --base, or use it with {self._phase4_ids()}")
        return _with_base(exp, _lookup(self.experiments, base, self.source, "experiment"),
                          self.source)

    def host(self, name: str) -> Host:
        return _lookup(self.hosts, name, self.source, "host")

    def dataset_for(self, host: Host) -> Dataset:
        """The host's dataset, with the host's own `data_root` (when it sets one) as its root."""
        dataset = self.datasets[host.dataset]
        return replace(dataset, root=host.data_root) if host.data_root else dataset

    def _phase4_ids(self) -> str:
        return ", ".join(e.id for e in self.experiments.values() if e.base) or "none"


def _lookup(table: Mapping[str, Any], name: str, source: str, what: str) -> Any:
    if name in table:
        return table[name]
    raise ConfigError(source, f"{what}s", f"unknown {what} {name!r}",
                      _did_you_mean(name, table) + f"known: {', '.join(table)}")


def _with_base(exp: Experiment, base: Experiment, source: str) -> Experiment:
    if base.base is not None:
        raise ConfigError(source, f"experiments.{exp.id}.base",
                          f"{base.id!r} is itself a Phase-4 run", "name an experiment of phases 1-3")
    return replace(exp, data_mode=base.data_mode, preprocessing=base.preprocessing,
                   masking=base.masking, base=base.id)


# ---------------------------------------------------------------------------
# Loading and validation


def load_config(path: str | Path) -> Config:
    """Read and validate `path`; raises ConfigError (never a bare traceback)."""
    path = Path(path)
    source = str(path)
    try:
        raw_bytes = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found",
                          "pass --config PATH, or run from the project folder") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read the file: {exc.strerror}") from None
    return parse_config(raw_bytes, source)


def parse_config(raw_bytes: bytes, source: str = "<config>") -> Config:
    """Validate TOML bytes into a Config; `source` names the file in messages."""
    try:
        data = tomllib.loads(raw_bytes.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "", f"not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}",
                          "a table declared twice means a duplicate id or key") from None
    root = _Table(data, "", source, expected=TOP_LEVEL_TABLES)
    plan_name = _plan_name(root)
    training = _training(root.table("training"))
    config = Config(
        source=source,
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
        plan_name=plan_name,
        training=training,
        augmentation=_augmentation(root.table("augmentation")),
        sampling=_sampling(root.table("sampling")),
        metrics=_metrics(root.table("metrics")),
        thresholds=_thresholds(root.table("thresholds")),
        targets=_targets(root.table("targets")),
        data=_data(root.table("data")) if "data" in root.data else DataConfig(),
        decision=_decision(root.table("decision")) if "decision" in root.data else DecisionConfig(),
        experiments=MappingProxyType(_experiments(root.table("experiments"), training.replicates)),
        datasets=MappingProxyType(_datasets(root.table("datasets"))),
        hosts=MappingProxyType({}),
    )
    hosts = _hosts(root.table("hosts"), config.datasets)
    root.done()
    return replace(config, hosts=MappingProxyType(hosts))


TOP_LEVEL_TABLES = frozenset({"plan", "training", "augmentation", "sampling", "metrics", "thresholds", "targets",
                              "data", "decision",
                              "experiments", "datasets", "hosts"})


class _Table:
    """A TOML table being read: tracks the key path and which keys were used."""

    def __init__(self, data: Any, path: str, source: str, expected: frozenset[str] = frozenset()) -> None:
        if not isinstance(data, dict):
            raise ConfigError(source, path, f"expected a table, found {_kind(data)}")
        self.data, self.path, self.source = data, path, source
        self.used: set[str] = set()
        self.expected = expected   # names known here before they are read: never taken for a typo

    def misspelling_of(self, name: str) -> str | None:
        """A key present here that looks like a misspelt `name` (and is not a known name itself)."""
        others = [k for k in self.data if k != name and k not in self.expected and k not in self.used]
        typo = difflib.get_close_matches(name, others, n=1, cutoff=0.6)
        return typo[0] if typo else None

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, problem: str, hint: str = "") -> ConfigError:
        return ConfigError(self.source, self.key(name), problem, hint)

    def get(self, name: str, types: tuple[type, ...], expected: str, default: Any = ...) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                typo = self.misspelling_of(name)
                if typo:  # a misspelt required key: point at the misspelling, not at the gap
                    raise self.error(typo, "unknown key", f"did you mean {name!r}?")
                raise self.error(name, f"missing; expected {expected}")
            return default
        value = self.data[name]
        # bool is an int in Python; a `true` where a number belongs is a mistake.
        if isinstance(value, bool) and bool not in types:
            raise self.error(name, f"expected {expected}, found a boolean ({value!r})")
        if not isinstance(value, types):
            raise self.error(name, f"expected {expected}, found {_kind(value)} ({value!r})")
        return value

    def str(self, name: str, default: Any = ..., choices: tuple[str, ...] = ()) -> Any:
        value = self.get(name, (str,), "a string", default)
        if choices and value not in choices:
            raise self.error(name, f"{value!r} is not one of {', '.join(choices)}",
                             _did_you_mean(value, choices).rstrip("; "))
        return value

    def int(self, name: str, default: Any = ..., minimum: int | None = None,
            maximum: int | None = None) -> Any:
        value = self.get(name, (int,), "an integer", default)
        if value is not None:
            _check_range(self, name, value, minimum, maximum)
        return value

    def float(self, name: str, default: Any = ..., minimum: float | None = None,
              maximum: float | None = None) -> Any:
        value = self.get(name, (int, float), "a number", default)
        if value is None:
            return None
        _check_range(self, name, value, minimum, maximum)
        return float(value)

    def prob(self, name: str) -> float:
        value = self.get(name, (int, float), "a probability between 0 and 1")
        if not 0.0 <= value <= 1.0:
            raise self.error(name, f"probability {value} is outside [0, 1]")
        return float(value)

    def bool(self, name: str, default: Any = ...) -> Any:
        return self.get(name, (bool,), "true or false", default)

    def list(self, name: str, item_types: tuple[type, ...], expected: str) -> list[Any]:
        value = self.get(name, (list,), f"a list of {expected}")
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, item_types):
                raise self.error(f"{name}[{i}]", f"expected {expected}, found {_kind(item)} ({item!r})")
        return value

    def table(self, name: str) -> "_Table":
        self.used.add(name)
        if name not in self.data:
            typo = self.misspelling_of(name)
            if typo:  # [trainng] for [training]: point at the misspelling, not at the gap
                raise self.error(typo, "unknown table", f"did you mean [{self.key(name)}]?")
            raise self.error(name, "missing table", f"add a [{self.key(name)}] section")
        return _Table(self.data[name], self.key(name), self.source)

    def items(self) -> list[tuple[str, "_Table"]]:
        """Sub-tables keyed by name (experiments, hosts, datasets)."""
        out = []
        for name, value in self.data.items():
            self.used.add(name)
            out.append((name, _Table(value, self.key(name), self.source)))
        return out

    def done(self) -> None:
        """Reject keys nobody asked for, with a 'did you mean'."""
        for name in self.data:
            if name not in self.used:
                known = sorted(self.used)
                raise self.error(name, "unknown key",
                                 _did_you_mean(name, known) + f"known keys here: {', '.join(known)}")


def _check_range(t: _Table, name: str, value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and value < lo:
        raise t.error(name, f"{value} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise t.error(name, f"{value} is above the maximum {hi}")


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _did_you_mean(name: str, known: Any) -> str:
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""


def id_problem(name: str, what: str = "experiment") -> str | None:
    """Why `name` cannot be an id (of an experiment, host or dataset), or None when it can.

    Ids become directory names and command arguments: [A-Za-z0-9_.-], starting with a letter
    or digit (`.` and `..` would reach outside the runs root). The config, the launcher and the
    fleet all check with this.
    """
    if ID_PATTERN.match(name):
        return None
    return f"{what} id {name!r} is not a plain name: use [A-Za-z0-9_.-] and start with a letter or digit"


def _check_id(t: _Table, name: str, what: str) -> None:
    problem = id_problem(name, what)
    if problem:
        raise ConfigError(t.source, t.path, problem, "ids become directory names and command arguments; rename it")


def _plan_name(root: _Table) -> str:
    plan = root.table("plan")
    name = plan.str("name")
    plan.str("date", default="")
    plan.done()
    return name


def _training(t: _Table) -> TrainingConfig:
    cfg = TrainingConfig(
        architecture=t.str("architecture", choices=("resnet18",)),
        stem=t.str("stem", choices=STEMS),
        in_channels=t.int("in_channels", minimum=1),
        image_size=t.int("image_size", minimum=8, maximum=64),
        epochs=t.int("epochs", minimum=1),
        batch_size=t.int("batch_size", minimum=1),
        learning_rate=t.float("learning_rate", minimum=0.0),
        weight_decay=t.float("weight_decay", minimum=0.0),
        optimizer=t.str("optimizer", choices=("adamw",)),
        scheduler=t.str("scheduler", choices=("cosine",)),
        early_stopping_patience=t.int("early_stopping_patience", minimum=1),
        mixed_precision=t.bool("mixed_precision"),
        seed=t.int("seed", minimum=0),
        replicates=t.int("replicates", default=1, minimum=1, maximum=MAX_REPLICATES),
    )
    t.done()
    return cfg


def _augmentation(t: _Table) -> AugmentationConfig:
    cfg = AugmentationConfig(hflip_p=t.prob("hflip_p"), vflip_p=t.prob("vflip_p"), rot90=t.bool("rot90"))
    t.done()
    return cfg


def _sampling(t: _Table) -> SamplingConfig:
    fraction = t.float("sample_fraction")
    if not 0.0 < fraction <= 1.0:
        raise t.error("sample_fraction", f"{fraction} is outside (0, 1]", "the plan's sample is 0.10")
    allowed = ("label", "theta_e_bin", "psf_bin", "depth_bin")
    stratify = t.list("stratify", (str,), "strings")
    for i, s in enumerate(stratify):
        if s not in allowed:
            raise t.error(f"stratify[{i}]", f"{s!r} is not one of {', '.join(allowed)}",
                          _did_you_mean(s, allowed).rstrip("; "))
    cfg = SamplingConfig(sample_fraction=fraction, seed=t.int("seed", minimum=0), stratify=tuple(stratify),
                         unpaired_method=t.str("unpaired_method", default="origin", choices=UNPAIRED_METHODS))
    t.done()
    return cfg


def _data(t: _Table) -> DataConfig:
    limit = t.float("bad_row_limit", default=DEFAULT_BAD_ROW_LIMIT)
    if not 0.0 <= limit < 1.0:
        raise t.error("bad_row_limit", f"{limit} is outside [0, 1)",
                      "it is a share of a split's rows: 0.001 drops up to 0.1%, 0 drops none")
    cfg = DataConfig(bad_row_limit=limit)
    t.done()
    return cfg


def _increasing(t: _Table, name: str, values: list[float], strict: bool = True) -> None:
    for i in range(1, len(values)):
        if values[i] <= values[i - 1]:
            raise t.error(f"{name}[{i}]", f"{values[i]} does not increase after {values[i - 1]}",
                          "list the values in increasing order")


def _metrics(t: _Table) -> MetricsConfig:
    bins = [float(b) for b in t.list("thetae_bins", (int, float), "numbers (bin edges, arcsec)")]
    if len(bins) < 2:
        raise t.error("thetae_bins", "needs at least two edges")
    _increasing(t, "thetae_bins", bins)
    if bins[0] < 0:
        raise t.error("thetae_bins[0]", f"{bins[0]} is negative")
    radii = t.list("sensitivity_radii", (int,), "integers (pixels)")
    for i, r in enumerate(radii):
        if r < 0:
            raise t.error(f"sensitivity_radii[{i}]", f"radius {r} is negative")
    _increasing(t, "sensitivity_radii", radii)
    reliance = t.int("core_reliance_radius", minimum=0)
    if reliance not in radii or 0 not in radii:
        raise t.error("core_reliance_radius", f"core_reliance needs radii 0 and {reliance} in sensitivity_radii",
                      f"sensitivity_radii is {radii}")
    n = t.int("gate_n_samples", minimum=20)
    if n % 2:
        raise t.error("gate_n_samples", f"{n} is odd", "the gate sample is balanced: use an even number")
    cfg = MetricsConfig(
        gate_every_epochs=t.int("gate_every_epochs", minimum=1),
        gate_n_samples=n,
        gate_cv_folds=t.int("gate_cv_folds", minimum=2),
        gate_seed=t.int("gate_seed", minimum=0),
        core_box=t.int("core_box", minimum=1, maximum=63),
        thetae_bins=tuple(bins),
        thetae_min_positives=t.int("thetae_min_positives", minimum=1),
        sensitivity_radii=tuple(radii),
        core_reliance_radius=reliance,
        bootstrap_draws=t.int("bootstrap_draws", default=DEFAULT_BOOTSTRAP_DRAWS, minimum=0),
        bootstrap_seed=t.int("bootstrap_seed", default=DEFAULT_BOOTSTRAP_SEED, minimum=0),
    )
    t.done()
    return cfg


def _band(t: _Table, name: str, higher_is_better: bool) -> Band:
    b = t.table(name)
    if higher_is_better:
        pass_limit, fail_limit = b.float("pass_above"), b.float("fail_below")
        ok = fail_limit <= pass_limit
        order = "fail_below must not exceed pass_above"
    else:
        pass_limit, fail_limit = b.float("pass_below"), b.float("fail_above")
        ok = pass_limit <= fail_limit
        order = "pass_below must not exceed fail_above"
    if not ok:
        raise ConfigError(t.source, b.path, f"the PASS and FAIL bounds are the wrong way round ({order})")
    b.done()
    return Band(name, higher_is_better, pass_limit, fail_limit)


def _thresholds(t: _Table) -> Thresholds:
    cfg = Thresholds(
        core_lr_auc=_band(t, "core_lr_auc", False),
        radial_lr_auc=_band(t, "radial_lr_auc", False),
        core_reliance=_band(t, "core_reliance", False),
        thetae_min_bin_auroc=_band(t, "thetae_min_bin_auroc", True),
        thetae_max_spread=_band(t, "thetae_max_spread", False),
    )
    t.done()
    return cfg


def _targets(t: _Table) -> Targets:
    cfg = Targets(val_auroc=t.float("val_auroc", minimum=0.0, maximum=1.0),
                  test_auroc=t.float("test_auroc", minimum=0.0, maximum=1.0))
    t.done()
    return cfg


def _decision(t: _Table) -> DecisionConfig:
    cfg = DecisionConfig(variant_core_gate=t.str("variant_core_gate", default="masked",
                                                 choices=CORE_GATE_READINGS))
    t.done()
    return cfg


def _masking(t: _Table) -> Masking:
    kind = t.str("kind", choices=MASK_KINDS)
    if kind == "none":
        t.done()
        return Masking("none")
    if kind == "stochastic":
        step = MaskStep(0, t.int("radius", minimum=0), t.prob("p"))
        t.done()
        return Masking("stochastic", (step,))
    raw = t.get("schedule", (list,), "a list of {from_epoch, radius, p} tables")
    if not raw:
        raise t.error("schedule", "is empty", "give at least one step starting at from_epoch = 0")
    steps = []
    for i, item in enumerate(raw):
        s = _Table(item, t.key(f"schedule[{i}]"), t.source)
        steps.append(MaskStep(s.int("from_epoch", minimum=0), s.int("radius", minimum=0), s.prob("p")))
        s.done()
        if i and steps[i].from_epoch <= steps[i - 1].from_epoch:
            raise s.error("from_epoch", f"{steps[i].from_epoch} does not increase after "
                          f"{steps[i - 1].from_epoch}", "list the steps in epoch order")
    if steps[0].from_epoch != 0:
        raise t.error("schedule[0].from_epoch", f"is {steps[0].from_epoch}; the first step must start at 0",
                      "otherwise the first epochs would have no masking rule")
    t.done()
    return Masking("scheduled", tuple(steps))


def _experiments(t: _Table, default_replicates: int = 1) -> dict[str, Experiment]:
    out: dict[str, Experiment] = {}
    folded: dict[str, str] = {}
    pending_base: list[tuple[_Table, Experiment]] = []
    for exp_id, e in t.items():
        _check_id(e, exp_id, "experiment")
        # Run directories are named by id: A1 and a1 would collide on some file systems.
        if exp_id.lower() in folded:
            raise e.error("", f"duplicate experiment id: {exp_id!r} and {folded[exp_id.lower()]!r} "
                          "differ only in case", "ids name run directories; rename one")
        folded[exp_id.lower()] = exp_id
        phase = e.int("phase", minimum=1, maximum=4)
        sample = e.str("sample", choices=SAMPLES)
        purpose = e.str("purpose", default="")
        base = e.str("base", default=None)
        replicates = e.int("replicates", default=default_replicates, minimum=1, maximum=MAX_REPLICATES)
        if base is not None:
            exp = Experiment(exp_id, phase, "", "", sample, Masking("none"), purpose, base, replicates)
            pending_base.append((e, exp))
        else:
            exp = Experiment(exp_id, phase, e.str("data_mode", choices=DATA_MODES),
                             e.str("preprocessing", choices=PREPROCESSINGS), sample,
                             _masking(e.table("masking")), purpose, replicates=replicates)
        e.done()
        out[exp_id] = exp
    for e, exp in pending_base:
        if exp.base not in out:
            raise e.error("base", f"unknown experiment {exp.base!r}",
                          _did_you_mean(exp.base, out) + f"known: {', '.join(out)}")
        out[exp.id] = _with_base(exp, out[exp.base], t.source)
    if not out:
        raise ConfigError(t.source, t.path, "no experiments", "add at least one [experiments.ID] table")
    return out


def _datasets(t: _Table) -> dict[str, Dataset]:
    out = {}
    for name, d in t.items():
        _check_id(d, name, "dataset")
        kind = d.str("kind", choices=DATASET_KINDS)
        out[name] = Dataset(name, kind, d.str("root"),
                            d.float("scale", default=None, minimum=0.0),
                            d.int("seed", default=None, minimum=0),
                            d.str("unpaired_manifest", default=None),
                            MappingProxyType(_priors(d, kind)))
        d.done()
    return out


def _priors(d: _Table, kind: str) -> dict[str, Any]:
    """A synthetic dataset's `priors` table: names of the twin's Priors fields and their values
    (numbers, or lists of numbers); engine.synth checks the names against the twin's."""
    if "priors" not in d.data:
        return {}
    p = d.table("priors")
    if kind != "synthetic":
        raise p.error("", "only a synthetic dataset has priors (they are the twin's)", "remove the table")
    out: dict[str, Any] = {}
    for key, value in p.data.items():
        p.used.add(key)
        numbers = value if isinstance(value, list) else [value]
        if not numbers or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
            raise p.error(key, f"expected a number or a list of numbers, found {_kind(value)} ({value!r})")
        out[key] = tuple(value) if isinstance(value, list) else value
    weight = out.get("lens_host_luminosity_weight", 0)
    if isinstance(weight, (int, float)) and weight > 0 and "unpaired_manifest" not in d.data:
        raise p.error("lens_host_luminosity_weight", "selects the lens hosts, which only the lens catalogue the "
                      "twin writes carries into the unpaired view",
                      f"add unpaired_manifest = \"<root>/{LENS_CATALOGUE}\" to [{d.path}]")
    p.done()
    return out


def _hosts(t: _Table, datasets: Mapping[str, Dataset]) -> dict[str, Host]:
    out = {}
    for name, h in t.items():
        _check_id(h, name, "host")
        transport = h.str("transport", choices=TRANSPORTS)
        dataset = h.str("dataset")
        if dataset not in datasets:
            raise h.error("dataset", f"unknown dataset {dataset!r}",
                          _did_you_mean(dataset, datasets) + f"known: {', '.join(datasets) or 'none'}")
        host = Host(
            name=name, transport=transport, enabled=h.bool("enabled", default=True),
            work_dir=h.str("work_dir"), python=h.str("python"), runs_root=h.str("runs_root"),
            dataset=dataset, ssh_host=h.str("ssh_host", default=None), user=h.str("user", default=None),
            port=h.int("port", default=None, minimum=1, maximum=65535),
            identity_file=h.str("identity_file", default=None),
            cache_dir=h.str("cache_dir", default=None),
            data_root=h.str("data_root", default=None),
            max_runs_per_gpu=h.int("max_runs_per_gpu", default=DEFAULT_MAX_RUNS_PER_GPU, minimum=1),
        )
        if transport == "ssh" and not host.ssh_host:
            raise h.error("ssh_host", "missing; an ssh host needs an address or an ~/.ssh/config alias")
        if transport == "local" and (host.ssh_host or host.user or host.port):
            raise h.error("transport", "is 'local' but ssh settings are given",
                          "set transport = \"ssh\" or remove ssh_host/user/port")
        for key in ("work_dir", "python", "runs_root", "cache_dir", "data_root"):
            value = getattr(host, key) or ""
            if "\x00" in value or "\n" in value:
                raise h.error(key, "contains a control character")
        h.done()
        out[name] = host
    if not out:
        raise ConfigError(t.source, t.path, "no hosts", "add [hosts.local] with transport = \"local\"")
    return out


def default_config_path() -> Path:
    """`experiments.toml` in the current directory (the project folder)."""
    return Path("experiments.toml")

