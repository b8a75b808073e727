"""Every setting that decides which examples a data root gives and how its blobs are read, in one place.

train, evaluate, gates and the manifest command all build their `DataSettings` from the config
with `DataSettings.from_config`, so one experiments.toml gives every command the same
manifests, the same stamp caches and the same bad-row limit:

- sampling.seed, sampling.sample_fraction, sampling.stratify, metrics.thetae_bins: the sample;
- sampling.unpaired_method, or a dataset's unpaired_manifest (an origin manifest to import):
  the unpaired view;
- data.bad_row_limit: how many bad rows a split may lose before a command stops;
- a host's cache_dir: where manifests and stamp caches go (engine.data.cachedir says the default).

Torch-free and NumPy-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.config import BAD_ROW_LIMIT_KEY, DEFAULT_BAD_ROW_LIMIT, Config, Host, load_config

DEFAULT_THETAE_BINS = (0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0)
DEFAULT_STRATA = ("label", "theta_e_bin", "psf_bin", "depth_bin")
DEFAULT_FRACTION = 0.10


@dataclass(frozen=True)
class DataSettings:
    """The data layer's settings; the defaults are the shipped experiments.toml's."""

    seed: int = 42
    sample_fraction: float = DEFAULT_FRACTION
    thetae_bins: tuple[float, ...] = DEFAULT_THETAE_BINS
    strata: tuple[str, ...] = DEFAULT_STRATA
    unpaired_method: str = "origin"
    unpaired_manifest: str | None = None     # an origin manifest (v1 file or v2 folder) to import
    bad_row_limit: float = DEFAULT_BAD_ROW_LIMIT
    cache_dir: str | None = None             # None: engine.data.cachedir's default
    # Where the values came from, for messages: the key (or option) a person would change.
    bad_row_limit_setting: str = f"{BAD_ROW_LIMIT_KEY} in experiments.toml"
    cache_dir_setting: str = "cache_dir under the host's [hosts.NAME] in experiments.toml (or --cache-dir)"
    source: str = "built-in defaults"

    @classmethod
    def from_config(cls, config: Config, host: Host | None = None) -> "DataSettings":
        """The settings of `config`; with `host`, also its cache_dir and its dataset's unpaired_manifest."""
        s = cls(seed=config.sampling.seed, sample_fraction=config.sampling.sample_fraction,
                thetae_bins=tuple(config.metrics.thetae_bins), strata=tuple(config.sampling.stratify),
                unpaired_method=config.sampling.unpaired_method, bad_row_limit=config.data.bad_row_limit,
                bad_row_limit_setting=f"{BAD_ROW_LIMIT_KEY} in {config.source}", source=config.source)
        if host is None:
            return s
        dataset = config.dataset_for(host)
        manifest = dataset.unpaired_manifest
        return replace(
            s, unpaired_manifest=os.path.expanduser(host.resolve(manifest)) if manifest else None,
            cache_dir=os.path.expanduser(host.resolve(host.cache_dir)) if host.cache_dir else None,
            cache_dir_setting=f"hosts.{host.name}.cache_dir in {config.source}")

    def with_cache_dir(self, path: str | Path | None, setting: str = "--cache-dir") -> "DataSettings":
        """These settings with the cache folder a command line gave (None keeps them)."""
        return self if path is None else replace(self, cache_dir=str(path), cache_dir_setting=setting)

    def manifest_options(self) -> dict[str, Any]:
        """The keyword arguments of engine.data.manifest.build_manifests."""
        return {"seed": self.seed, "sample_fraction": self.sample_fraction, "thetae_bins": self.thetae_bins,
                "strata": self.strata, "unpaired_method": self.unpaired_method,
                "unpaired_manifest": self.unpaired_manifest}


def settings_for_command(config_path: str | Path | None, host: str | None) -> tuple[Config | None, DataSettings]:
    """For a command line: the config (`config_path`, else ./experiments.toml when present) and its settings.

    With `host`, also that host's cache folder and imported manifest. No file and no host: no
    config, and the built-in defaults (which are the shipped file's). A bad file is a ConfigError.
    """
    path = Path(config_path) if config_path else Path("experiments.toml")
    if config_path is None and host is None and not path.is_file():
        return None, DataSettings()
    config = load_config(path)
    return config, DataSettings.from_config(config, config.host(host) if host else None)
