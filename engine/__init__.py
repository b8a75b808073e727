"""The headless science core of lenstui: data, training, metrics, gates, decisions.

Torch-free modules (safe for `lenstui` to import): config, rundir, status,
launch, decision, verdicts, report. Everything else needs torch or NumPy.
"""

ENGINE_VERSION = "0.3.0"   # 0.3: metrics schema 2 (epochs from 1), launch --wait
