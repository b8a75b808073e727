"""A host's GPUs: NVML through nvidia-ml-py, `nvidia-smi` CSV as the fallback, else none and why.

Each GPU as a dict: index, name, utilization (%), memory used and total (MiB), temperature (°C),
power (W) and its compute processes (pid, memory). A value a board does not report is None,
never an error. Torch-free: the status probe and the launcher's free-GPU choice read it.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any


NVIDIA_SMI_TIMEOUT = 10.0  # a wedged driver must not hang the probe forever

def gpu_snapshot() -> tuple[list[dict[str, Any]], str, str | None]:
    """(gpus, source, note): NVML if it works, else nvidia-smi, else no GPU with a reason."""
    gpus, nvml_problem = _gpus_from_nvml()
    if gpus is not None:
        return gpus, "nvml", None
    gpus, smi_problem = _gpus_from_nvidia_smi()
    if gpus is not None:
        return gpus, "nvidia-smi", None
    return [], "none", f"no GPU: {nvml_problem}; {smi_problem}"

# NVML is initialised once per process and left open: `--serve` answers every poll from one
# process, and nvmlInit can cost tens to hundreds of milliseconds on a multi-GPU host. A failed
# init is tried again next poll; a failed query shuts NVML down and starts afresh next poll.
_nvml: Any = None

NVML_NOT_AVAILABLE = 2**64 - 1   # what NVML reports for a value it does not have (e.g. in a container)

def _nvml_module() -> tuple[Any, str]:
    """pynvml, initialised (once); or None and why not."""
    global _nvml
    if _nvml is not None:
        return _nvml, ""
    try:
        import pynvml  # nvidia-ml-py; lazily, since most laptops have neither it nor a GPU
    except ImportError:
        return None, "NVML unavailable (nvidia-ml-py not installed)"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # pynvml raises NVMLError subclasses; the driver may be absent
        return None, f"NVML unavailable ({exc})"
    _nvml = pynvml
    return _nvml, ""

def _gpus_from_nvml() -> tuple[list[dict[str, Any]] | None, str]:
    pynvml, problem = _nvml_module()
    if pynvml is None:
        return None, problem
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            procs = []
            for p in pynvml.nvmlDeviceGetComputeProcesses(handle):
                used = getattr(p, "usedGpuMemory", None)
                procs.append({"pid": int(p.pid), "used_memory_mib": (
                    None if used is None or used >= NVML_NOT_AVAILABLE else round(used / 2**20))})
            gpus.append({
                "index": index,
                "name": name.decode() if isinstance(name, bytes) else str(name),
                "utilization": _nvml_or_none(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                "memory_used_mib": round(memory.used / 2**20),
                "memory_total_mib": round(memory.total / 2**20),
                "temperature_c": _nvml_or_none(
                    lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
                "power_w": _nvml_or_none(lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
                "processes": procs,
            })
        return gpus, ""
    except Exception as exc:
        _nvml_reset()   # a lost GPU or a driver reload: initialise afresh next poll
        return None, f"NVML query failed ({exc})"

def _nvml_reset() -> None:
    global _nvml
    if _nvml is not None:
        try:
            _nvml.nvmlShutdown()
        except Exception:
            pass
    _nvml = None

def _nvml_or_none(read: Any) -> Any:
    # Some boards do not report power or utilisation; that is a missing value, not an error.
    try:
        return read()
    except Exception:
        return None

GPU_QUERY = "index,uuid,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw"

APP_QUERY = "gpu_uuid,pid,used_memory"

def _gpus_from_nvidia_smi() -> tuple[list[dict[str, Any]] | None, str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, "nvidia-smi not found"
    gpu_out, problem = _run_smi([exe, f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"])
    if gpu_out is None:
        return None, problem
    app_out, _ = _run_smi([exe, f"--query-compute-apps={APP_QUERY}", "--format=csv,noheader,nounits"])
    return parse_nvidia_smi(gpu_out, app_out or ""), ""

def _run_smi(argv: list[str]) -> tuple[str | None, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, f"nvidia-smi did not answer within {NVIDIA_SMI_TIMEOUT:.0f} s"
    except OSError as exc:
        return None, f"nvidia-smi failed to start ({exc.strerror})"
    if done.returncode != 0:
        return None, f"nvidia-smi failed: {(done.stderr or done.stdout).strip()[:200]}"
    return done.stdout, ""

def parse_nvidia_smi(gpu_csv: str, apps_csv: str) -> list[dict[str, Any]]:
    """GPU dicts from `nvidia-smi --query-gpu=GPU_QUERY` and `--query-compute-apps=APP_QUERY` CSV."""
    gpus, by_uuid = [], {}
    for line in gpu_csv.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 8:
            continue
        index, uuid, name, util, used, total, temp, power = cells[:8]
        gpu = {"index": _int(index), "name": name, "utilization": _int(util),
               "memory_used_mib": _int(used), "memory_total_mib": _int(total),
               "temperature_c": _int(temp), "power_w": _float(power), "processes": []}
        gpus.append(gpu)
        by_uuid[uuid] = gpu
    for line in apps_csv.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 3 or cells[0] not in by_uuid or _int(cells[1]) is None:
            continue
        by_uuid[cells[0]]["processes"].append({"pid": _int(cells[1]), "used_memory_mib": _int(cells[2])})
    return gpus

def _float(text: str) -> float | None:
    try:  # "[N/A]", "[Not Supported]" and friends are missing values
        return float(text)
    except ValueError:
        return None

def _int(text: str) -> int | None:
    value = _float(text)
    return None if value is None else int(round(value))
