"""lenstui: a keyboard-driven control center for the lens-detection experiment plan.

Starts without torch, NumPy-heavy code or sklearn (it runs on a laptop): it
imports only engine's torch-free modules (config, rundir, status, launch, ...).
"""

__version__ = "0.1.0"
