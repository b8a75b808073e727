"""One code version (engine/protocol/codeversion.py): sync and a run say the same thing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from engine.protocol.codeversion import ENGINE_DIR, checkout_version, code_version, engine_files

REPO = Path(__file__).resolve().parents[1]


def test_a_copied_engine_without_git_is_named_by_its_content(tmp_path):
    engine = tmp_path / "copy" / "engine"
    shutil.copytree(ENGINE_DIR, engine, ignore=shutil.ignore_patterns("__pycache__"))
    first = checkout_version(engine)
    assert first.startswith("engine-") and " " not in first, first
    assert code_version(engine) == first, "no record, no git: the content is the version"
    (engine / "config.py").write_text((engine / "config.py").read_text() + "\n# edited\n")
    assert checkout_version(engine) != first, "another engine, another version"
    (engine / "__pycache__").mkdir()
    (engine / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert engine / "__pycache__" / "x.pyc" not in engine_files(engine)


def test_the_checkout_names_its_commit_and_the_engine_hash_that_sync_pushes():
    version = checkout_version()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode == 0:
        assert version.startswith(f"git-{head.stdout.strip()}") and " engine-" in version
    assert version.split("engine-")[1] == checkout_version(ENGINE_DIR, engine_files()).split("engine-")[1]


def test_the_training_run_records_that_version():
    # The trainer records code_version() in run.json (tests/test_train.py runs it for real and
    # compares run.json with code_version()).
    done = subprocess.run([sys.executable, "-c", "from engine.training import trainer; "
                           "from engine.protocol import codeversion; "
                           "print(trainer.code_version is codeversion.code_version)"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr
