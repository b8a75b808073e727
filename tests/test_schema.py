"""metrics.json and run.json have one schema (engine/protocol/schema.py): writers and readers use its keys.

tests/test_train.py checks that a real run writes no undeclared key; here, that the names the
engine's writers map to and the keys its readers look up are declared too, so a misspelt or a
retired key fails here instead of reading as "no value yet" on every screen.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.protocol import schema
from engine.protocol.schema import EpochRow, GateRecord, Metrics, RunInfo, SensitivityPoint, ThetaEBin, Verdict

REPO = Path(__file__).resolve().parents[1]
DECLARED = set().union(*(t.__annotations__ for t in (Metrics, EpochRow, GateRecord, Verdict, RunInfo, ThetaEBin,
                                                     SensitivityPoint)))
# The readers of metrics documents, and the shape of a metric's name (what is checked).
READERS = sorted({*(p.relative_to(REPO).as_posix() for p in (REPO / "engine" / "results").glob("*.py")),
                  *(p.relative_to(REPO).as_posix() for p in (REPO / "lenstui").rglob("*.py")),
                  "engine/protocol/status.py", "engine/training/evaluate.py"})
METRIC_NAME = re.compile(r"^(final|test|best|core|radial|masked|gate|effective|bad|train|learning|epochs?|val)_\w+$")
# Names of that shape that are not metrics: the report's CSV columns, a decision branch.
NOT_METRICS = {"core_gate_reading", "core_lr_auc_judged", "radial_uninformative", "test_masking"}


def test_the_keys_the_status_entry_and_the_end_of_training_write_are_declared():
    from engine.training import evaluate

    assert set(schema.STATUS_KEYS) <= set(Metrics.__annotations__)
    assert set(schema.RUN_SUMMARY_KEYS) - set(RunInfo.__annotations__) == {"launched_at"}   # launch.json's
    for mapping in (evaluate._FINAL_GATE_KEYS, evaluate._FINAL_MASKED_KEYS, evaluate._RAW_KEYS):
        assert set(mapping.values()) <= set(Metrics.__annotations__), mapping
        assert set(mapping) <= set(GateRecord.__annotations__), mapping
    assert set(schema.EPOCH_METRICS) <= set(EpochRow.__annotations__)


def test_every_metric_a_reader_looks_up_is_declared():
    looked_up: dict[str, list[str]] = {}
    for name in READERS:
        text = (REPO / name).read_text()
        for n, line in enumerate(text.splitlines(), 1):
            for key in re.findall(r"""(?:\.get\(|\[)\s*["'](\w+)["']""", line):
                if METRIC_NAME.match(key) and key not in NOT_METRICS:
                    looked_up.setdefault(key, []).append(f"{name}:{n}")
    assert len(looked_up) > 30, "the readers were scanned"
    assert {k: v for k, v in looked_up.items() if k not in DECLARED} == {}
