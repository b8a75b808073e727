"""The config loader: the shipped plan loads exactly, and bad files fail with a message a person can act on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "experiments.toml"


@pytest.fixture(scope="module")
def shipped_text() -> str:
    return SHIPPED.read_text()


def test_shipped_plan_has_every_value_of_plan_v2():
    c = load_config(SHIPPED)
    t = c.training
    assert (t.architecture, t.epochs, t.batch_size, t.learning_rate, t.weight_decay) == ("resnet18", 50, 128, 1e-4, 1e-4)
    assert (t.optimizer, t.scheduler, t.early_stopping_patience, t.mixed_precision) == ("adamw", "cosine", 15, True)
    assert (c.augmentation.hflip_p, c.augmentation.vflip_p, c.augmentation.rot90) == (0.5, 0.5, True)
    assert list(c.experiments) == ["A1", "B1", "B2", "B3", "B4", "FULL"]
    a1, b1 = c.experiment("A1"), c.experiment("B1")
    assert (a1.data_mode, a1.preprocessing, a1.masking.kind) == ("paired", "residual", "none")
    assert (b1.data_mode, b1.preprocessing, b1.masking.kind) == ("unpaired", "residual", "none")
    assert c.experiment("B2").masking.at_epoch(0) == (5, 0.5)
    assert c.experiment("B4").masking.at_epoch(49) == (3, 0.3)
    b3 = c.experiment("B3").masking
    assert [b3.at_epoch(e) for e in (0, 9, 10, 29, 30, 49)] == [(7, 0.7), (7, 0.7), (5, 0.5), (5, 0.5), (3, 0.3), (3, 0.3)]
    full = c.experiment("FULL")
    assert (full.phase, full.sample, full.base, full.data_mode) == (4, "full", "B1", "unpaired")
    assert c.experiment("FULL", base="B3").masking == b3
    m = c.metrics
    assert (m.gate_every_epochs, m.gate_n_samples, m.gate_cv_folds) == (5, 2000, 5)
    assert m.thetae_bin_pairs[0] == (0.5, 0.75) and m.thetae_bin_pairs[-1] == (2.5, 3.0) and len(m.thetae_bin_pairs) == 6
    assert m.sensitivity_radii == (0, 3, 5, 7, 10, 15) and m.core_reliance_radius == 7
    th = c.thresholds
    assert (th.core_lr_auc.pass_limit, th.core_lr_auc.fail_limit) == (0.60, 0.65)
    assert (th.radial_lr_auc.pass_limit, th.radial_lr_auc.fail_limit) == (0.55, 0.60)
    assert (th.core_reliance.pass_limit, th.core_reliance.fail_limit) == (0.03, 0.05)
    assert (th.thetae_min_bin_auroc.pass_limit, th.thetae_min_bin_auroc.fail_limit) == (0.80, 0.70)
    assert (th.thetae_max_spread.pass_limit, th.thetae_max_spread.fail_limit) == (0.15, 0.20)
    assert (c.targets.val_auroc, c.targets.test_auroc) == (0.90, 0.88)
    assert list(c.hosts) == ["local", "lambda", "lambda2", "lambda3"]
    assert c.host("local").transport == "local" and c.host("local").enabled
    lam = c.host("lambda")
    assert not lam.enabled and lam.runs_root_path == "~/checkpoints" and lam.work_dir == "~/lenstui"
    assert lam.user is None, "the shipped example leaves the user to ~/.ssh/config"
    assert c.dataset_for(lam).root == "~/data/v5_cosmos_paired"
    assert c.dataset_for(c.host("local")).kind == "synthetic"
    # The data keys: the published builder's unpaired rules, 0.1% bad rows, caches where the data is.
    assert c.sampling.unpaired_method == "origin" and c.data.bad_row_limit == 0.001
    assert lam.cache_dir is None and c.dataset_for(lam).unpaired_manifest is None


def test_the_data_table_and_per_host_cache_folder_are_optional_and_read(shipped_text):
    without = parse_config(_edit(shipped_text, "[data]\nbad_row_limit = 0.001\n", "").encode())
    assert without.data.bad_row_limit == 0.001
    text = _edit(shipped_text, "bad_row_limit = 0.001", "bad_row_limit = 0.02")
    text = _edit(text, 'unpaired_method = "origin"', 'unpaired_method = "per_cell"')
    text = _edit(text, 'dataset = "synthetic-demo"', 'dataset = "synthetic-demo"\ncache_dir = "/scratch/cache"')
    text = _edit(text, 'root = "~/data/v5_cosmos_paired"',
                 'root = "~/data/v5_cosmos_paired"\nunpaired_manifest = "manifests/v2"')
    c = parse_config(text.encode())
    assert c.data.bad_row_limit == 0.02 and c.sampling.unpaired_method == "per_cell"
    assert c.host("local").cache_dir == "/scratch/cache"
    assert c.dataset_for(c.host("lambda")).unpaired_manifest == "manifests/v2"


@pytest.mark.parametrize("value,expected", [
    (0.59, "PASS"), (0.60, "WARN"), (0.62, "WARN"), (0.65, "WARN"), (0.651, "FAIL"), (None, None),
])
def test_lower_is_better_band_bounds_are_warn(value, expected):
    band = load_config(SHIPPED).thresholds.core_lr_auc
    assert band.classify(value) == expected


@pytest.mark.parametrize("value,expected", [(0.81, "PASS"), (0.80, "WARN"), (0.70, "WARN"), (0.69, "FAIL")])
def test_higher_is_better_band_mirrors(value, expected):
    assert load_config(SHIPPED).thresholds.thetae_min_bin_auroc.classify(value) == expected


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, f"fixture drifted: {old!r} not in experiments.toml"
    return text.replace(old, new, 1)


# Each case: an edit of the shipped file, and what the message must say (key path and problem).
BAD_CONFIGS = {
    "unknown key with suggestion": (
        ("batch_size = 128", "batch_sise = 128"),
        [r"training\.batch_sise: unknown key", r"did you mean 'batch_size'"]),
    "wrong type": (
        ("epochs = 50", 'epochs = "fifty"'),
        [r"training\.epochs: expected an integer, found a string \('fifty'\)"]),
    "boolean where a number belongs": (
        ("learning_rate = 1.0e-4", "learning_rate = true"),
        [r"training\.learning_rate: expected a number, found a boolean"]),
    "probability above 1": (
        ("hflip_p = 0.5", "hflip_p = 1.5"),
        [r"augmentation\.hflip_p: probability 1.5 is outside \[0, 1\]"]),
    "mask probability below 0": (
        ('masking = { kind = "stochastic", radius = 5, p = 0.5 }', 'masking = { kind = "stochastic", radius = 5, p = -0.1 }'),
        [r"experiments\.B2\.masking\.p: probability -0.1 is outside \[0, 1\]"]),
    "negative radius": (
        ('masking = { kind = "stochastic", radius = 3, p = 0.3 }', 'masking = { kind = "stochastic", radius = -3, p = 0.3 }'),
        [r"experiments\.B4\.masking\.radius: -3 is below the minimum 0"]),
    "negative sensitivity radius": (
        ("sensitivity_radii = [0, 3, 5, 7, 10, 15]", "sensitivity_radii = [0, -3, 5, 7, 10, 15]"),
        [r"metrics\.sensitivity_radii\[1\]: radius -3 is negative"]),
    "unknown dataset on a host": (
        ('dataset = "synthetic-demo"', 'dataset = "synthetic-dem"'),
        [r"hosts\.local\.dataset: unknown dataset 'synthetic-dem'", r"did you mean 'synthetic-demo'"]),
    "duplicate experiment id": (
        ("[experiments.B4]", "[experiments.B3]"),
        [r"not valid TOML", r"duplicate"]),
    "ids differing only in case": (
        ("[experiments.B4]", "[experiments.b3]"),
        [r"duplicate experiment id: 'b3' and 'B3' differ only in case"]),
    "id outside the allowed characters": (
        ("[experiments.B4]", '[experiments."B4;rm -rf ~"]'),
        [r"experiment id 'B4;rm -rf ~' is not a plain name: use \[A-Za-z0-9_\.-\]"]),
    "id that is a path component": (
        ("[experiments.B4]", '[experiments.".."]'),
        [r"experiment id '\.\.' is not a plain name: .*start with a letter or digit"]),
    "schedule epochs not increasing": (
        ("{ from_epoch = 30, radius = 3, p = 0.3 }", "{ from_epoch = 10, radius = 3, p = 0.3 }"),
        [r"experiments\.B3\.masking\.schedule\[2\]\.from_epoch: 10 does not increase after 10"]),
    "schedule not starting at epoch 0": (
        ("{ from_epoch = 0,  radius = 7, p = 0.7 }", "{ from_epoch = 2,  radius = 7, p = 0.7 }"),
        [r"schedule\[0\]\.from_epoch: is 2; the first step must start at 0"]),
    "unknown data mode": (
        ('data_mode = "paired"', 'data_mode = "pairs"'),
        [r"experiments\.A1\.data_mode: 'pairs' is not one of paired, unpaired", r"did you mean 'paired'"]),
    "unknown masking kind": (
        ('masking = { kind = "none" }', 'masking = { kind = "random" }'),
        [r"experiments\.A1\.masking\.kind: 'random' is not one of none, stochastic, scheduled"]),
    "bands the wrong way round": (
        ("pass_below = 0.60\nfail_above = 0.65", "pass_below = 0.65\nfail_above = 0.60"),
        [r"thresholds\.core_lr_auc: the PASS and FAIL bounds are the wrong way round"]),
    "theta_E bins not increasing": (
        ("thetae_bins = [0.50, 0.75, 1.00", "thetae_bins = [0.50, 1.75, 1.00"),
        [r"metrics\.thetae_bins\[2\]: 1.0 does not increase after 1.75"]),
    "Phase-4 base unknown": (
        ('base = "B1"', 'base = "B9"'),
        [r"experiments\.FULL\.base: unknown experiment 'B9'"]),
    "ssh host without address": (
        ('ssh_host = "lambda2"\n', ""),
        [r"hosts\.lambda2\.ssh_host: missing; an ssh host needs an address"]),
    "missing section": (
        ("[targets]\nval_auroc = 0.90\ntest_auroc = 0.88\n", ""),
        [r"targets: missing table", r"add a \[targets\] section"]),
    "misspelt section": (
        ("[training]\n", "[trainng]\n"),
        [r"trainng: unknown table", r"did you mean \[training\]\?"]),
    "port out of range": (
        ('runs_root = "~/checkpoints"\ndataset = "v5_cosmos_paired"\n\n[hosts.lambda2]',
         'port = 70000\nruns_root = "~/checkpoints"\ndataset = "v5_cosmos_paired"\n\n[hosts.lambda2]'),
        [r"hosts\.lambda\.port: 70000 is above the maximum 65535"]),
    "odd gate sample": (
        ("gate_n_samples = 2000", "gate_n_samples = 2001"),
        [r"metrics\.gate_n_samples: 2001 is odd"]),
    "bad-row limit not a share": (
        ("bad_row_limit = 0.001", "bad_row_limit = 5"),
        [r"data\.bad_row_limit: 5\.0 is outside \[0, 1\)", r"share of a split's rows"]),
    "unknown unpaired method": (
        ('unpaired_method = "origin"', 'unpaired_method = "orgin"'),
        [r"sampling\.unpaired_method: 'orgin' is not one of origin, per_cell", r"did you mean 'origin'"]),
    "unknown core-gate reading": (
        ('variant_core_gate = "masked"', 'variant_core_gate = "maskd"'),
        [r"decision\.variant_core_gate: 'maskd' is not one of masked, unmasked", r"did you mean 'masked'"]),
    "core reliance radius not measured": (
        ("core_reliance_radius = 7", "core_reliance_radius = 8"),
        [r"metrics\.core_reliance_radius: core_reliance needs radii 0 and 8 in sensitivity_radii"]),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_config_is_refused_with_file_key_and_expectation(name, shipped_text):
    (old, new), patterns = BAD_CONFIGS[name]
    with pytest.raises(ConfigError) as err:
        parse_config(_edit(shipped_text, old, new).encode(), "/x/experiments.toml")
    message = str(err.value)
    assert message.startswith("/x/experiments.toml: "), message
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"


def test_not_toml_names_the_line(tmp_path):
    bad = tmp_path / "experiments.toml"
    bad.write_text("[training\nepochs = 3\n")
    with pytest.raises(ConfigError, match=r"experiments\.toml: not valid TOML.*line 1"):
        load_config(bad)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found \(pass --config PATH"):
        load_config(tmp_path / "nope.toml")


def test_unknown_experiment_and_host_lookups_list_the_known_ones():
    c = load_config(SHIPPED)
    with pytest.raises(ConfigError, match=r"unknown experiment 'B5'.*did you mean 'B4'.*known: A1, B1"):
        c.experiment("B5")
    with pytest.raises(ConfigError, match=r"unknown host 'lamda'.*did you mean 'lambda'"):
        c.host("lamda")
    with pytest.raises(ConfigError, match=r"only a Phase-4 experiment"):
        c.experiment("B2", base="B3")


def test_config_is_frozen():
    c = load_config(SHIPPED)
    with pytest.raises(Exception):
        c.training.epochs = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.experiments["X"] = c.experiment("A1")  # type: ignore[index]


def test_the_decision_reading_defaults_to_masked_and_can_be_set(shipped_text):
    assert parse_config(shipped_text.encode()).decision.variant_core_gate == "masked"
    without = shipped_text.split("[decision]")[0] + "[experiments.A1]" + shipped_text.split("[experiments.A1]", 1)[1]
    assert "variant_core_gate" not in without
    assert parse_config(without.encode()).decision.variant_core_gate == "masked"
    unmasked = _edit(shipped_text, 'variant_core_gate = "masked"', 'variant_core_gate = "unmasked"')
    assert parse_config(unmasked.encode()).decision.variant_core_gate == "unmasked"


def test_a_host_can_keep_its_dataset_elsewhere_without_a_second_dataset_entry(shipped_text):
    text = shipped_text.replace('[hosts.lambda2]\nenabled = false\n',
                                '[hosts.lambda2]\nenabled = false\ndata_root = "/mnt/nvme/v5"\n')
    c = parse_config(text.encode())
    assert c.dataset_for(c.host("lambda2")).root == "/mnt/nvme/v5"
    assert c.dataset_for(c.host("lambda")).root == "~/data/v5_cosmos_paired"
    assert c.dataset_for(c.host("lambda2")).name == "v5_cosmos_paired" and list(c.datasets) == \
        ["synthetic-demo", "synthetic-shortcut", "v5_cosmos_paired"]
    with pytest.raises(ConfigError, match="data_root: expected a string"):
        parse_config(text.replace('data_root = "/mnt/nvme/v5"', "data_root = 5").encode())


def test_max_runs_per_gpu_defaults_to_three_and_must_be_at_least_one(shipped_text):
    c = parse_config(shipped_text.encode())
    assert c.host("local").max_runs_per_gpu == 3
    text = shipped_text.replace('[hosts.lambda2]\nenabled = false\n', '[hosts.lambda2]\nenabled = false\nmax_runs_per_gpu = 5\n')
    assert parse_config(text.encode()).host("lambda2").max_runs_per_gpu == 5
    with pytest.raises(ConfigError, match="hosts.lambda2.max_runs_per_gpu"):
        parse_config(text.replace("max_runs_per_gpu = 5", "max_runs_per_gpu = 0").encode())


def test_selected_lens_hosts_need_the_lens_catalogue_as_the_unpaired_manifest(shipped_text):
    c = parse_config(shipped_text.encode())
    assert dict(c.datasets["synthetic-shortcut"].priors) == {
        "lens_host_luminosity_weight": 1.0, "theta_e_grid": (2.2, 2.4, 2.6, 2.8, 3.0, 3.2, 3.4),
        "src_mag_r": (20.5, 22.0)}   # wide, bright lenses: B1 reaches TEST MASKING (docs/PLAN.md)
    without = shipped_text.replace('unpaired_manifest = "data/synthetic-shortcut/lens-catalogue"\n', "")
    with pytest.raises(ConfigError, match="lens_host_luminosity_weight.*add unpaired_manifest"):
        parse_config(without.encode())
    with pytest.raises(ConfigError, match="expected a number"):
        parse_config(shipped_text.replace("lens_host_luminosity_weight = 1.0", 'lens_host_luminosity_weight = "high"').encode())
