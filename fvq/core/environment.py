"""What machine and software made a run's numbers: gathered at each start, kept per attempt.

A run's floats depend on the kernels that computed them, and those are picked at run time: ATen's vector
kernels by the instruction set it dispatches to (``torch.backends.cpu.get_cpu_capability()``), MKL's GEMMs by
the CPU's vendor and features, oneDNN's convolutions by its own ISA check, and reductions by the thread
count. Two runs agree bit for bit only where all of those agree (docs/reproducibility.md), so the record
holds every one of them, plus the versions and the lock file that fix everything else.

- `gather(device)`: the record, a flat ``{field: str}`` ("none" = looked at, nothing there; a field left
  out or "" = not recorded, never guessed);
- `record(run_dir, env, step)`: appends it to ``run_dir/environment.json`` (a list: one entry per start of
  the run, so a run resumed on another machine shows both);
- `tags(attempts)`: the ``env.<field>`` tags of the latest attempt (MLflow, then the results CSVs), with
  ``env.changed`` naming the fields an earlier attempt had otherwise;
- `differences(a, b)`: the fields two records disagree on, one short string each.
"""
from __future__ import annotations

import hashlib
import os
import platform
import re
import time
from pathlib import Path

LOCK = Path(__file__).resolve().parents[2] / "requirements" / "lock.txt"
FILE = "environment.json"
# In the order a reader checks them: software first, then the machine, then what was asked of it.
FIELDS = ("python", "torch", "build", "blas", "onednn", "openmp", "numpy", "numpy_blas", "lock", "cpu", "cpu_id",
          "cpu_flags", "isa", "threads", "knobs", "device", "cuda", "cudnn", "driver")
# The results CSVs' columns (analysis/collect.py), from the tags: empty where a run has no record.
COLUMNS = (*(f"env.{k}" for k in FIELDS), "env.changed")
CPU_ID = ("vendor_id", "cpu family", "model", "stepping")  # one "AMD EPYC" name covers several generations
# The CPU features MKL and oneDNN choose their own kernels by (ATen's choice is `isa`).
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16")
# Variables that change which kernels run or how many threads: a run started with one of them set is
# another environment, even on the same machine.
KNOBS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
         "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")


def gather(device: str = "cpu", lock: Path | str = LOCK) -> dict[str, str]:
    """This process's environment; call it after ``torch.set_num_threads`` (threads are read, not given)."""
    import numpy
    import torch

    shown = torch.__config__.show()
    cpu = _cpuinfo()
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "build": f"cuda {torch.version.cuda}" if torch.version.cuda else "cpu",
        "blas": _blas(shown),
        "onednn": _onednn(shown, torch),
        "openmp": _match(r"OpenMP (\d+)", shown) or "none",
        "numpy": numpy.__version__,
        "numpy_blas": _numpy_blas(),
        "lock": _sha256(Path(lock)),
        "cpu": cpu.get("model name", "") or platform.processor() or platform.machine(),
        "cpu_id": "{} family {} model {} stepping {}".format(*(cpu.get(k, "?") for k in CPU_ID)),
        "cpu_flags": " ".join(f for f in FLAGS if f in cpu.get("flags", "").split()) or "none",
        "isa": torch.backends.cpu.get_cpu_capability(),
        "threads": str(torch.get_num_threads()),
        "knobs": " ".join(f"{k}={os.environ[k]}" for k in KNOBS if k in os.environ) or "none",
        "device": "cpu", "cuda": "none", "cudnn": "none", "driver": "none",
    }
    if str(device).startswith("cuda"):
        env.update(device=torch.cuda.get_device_name(torch.device(device)), cuda=str(torch.version.cuda),
                   cudnn=str(torch.backends.cudnn.version()), driver=_nvidia_driver())
    return env


def record(run_dir: str, env: dict[str, str], step: int) -> list[dict]:
    """Append this start's record (with the step it starts at) to ``environment.json``; return every attempt."""
    from fvq.core.rundir import write_json

    path = os.path.join(run_dir, FILE)
    attempts = read(run_dir)
    attempts.append({"attempt": len(attempts) + 1, "step": step,
                     "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **env})
    write_json(path, attempts)
    return attempts


def read(run_dir: str) -> list[dict]:
    """The attempts recorded in a run dir ([] when none, or the file is unreadable)."""
    import json

    try:
        with open(os.path.join(run_dir, FILE)) as f:
            attempts = json.load(f)
    except (OSError, ValueError):
        return []
    return [a for a in attempts if isinstance(a, dict)] if isinstance(attempts, list) else []


def tags(attempts: list[dict]) -> dict[str, str]:
    """MLflow tags of a run: ``env.<field>`` of its latest attempt; ``env.changed`` when it was resumed in
    another environment (its numbers then come from both: the fields say which differed)."""
    last = attempts[-1]
    out = {f"env.{k}": str(last[k]) for k in FIELDS if k in last}
    changed = sorted({d.split(" ", 1)[0] for a in attempts[:-1] for d in differences(a, last)},
                     key=FIELDS.index)
    if changed:
        out["env.changed"] = ",".join(changed)
    return out


def differences(a: dict, b: dict) -> list[str]:
    """``["isa AVX2 -> AVX512", ...]``: the fields recorded on both sides with different values (a field
    missing or empty on either side is unrecorded there, so it is not a difference)."""
    out = []
    for k in FIELDS:
        va, vb = str(a.get(k) or ""), str(b.get(k) or "")
        if va and vb and va != vb:
            out.append(f"{k} {_short(k, va)} -> {_short(k, vb)}")
    return out


def _short(field: str, value: str) -> str:
    return value[:12] if field == "lock" else value


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


def _cpuinfo() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo ({} elsewhere: macOS, Windows)."""
    out: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # one processor is enough: a node's cores are one model
                key, _, value = line.partition(":")
                out[key.strip()] = value.strip()
    except OSError:
        pass
    return out


def _numpy_blas() -> str:
    """numpy's own OpenBLAS and the kernel family it picked for this CPU (rFID's matrix square root runs
    on it, outside torch): ``openblas 0.3.31 Haswell``."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    libs = [i for i in threadpool_info() if i.get("user_api") == "blas" and "numpy" in i.get("filepath", "")]
    return " ".join(str(libs[0].get(k, "?")) for k in ("internal_api", "version", "architecture")) if libs else "none"


def _blas(shown: str) -> str:
    name = _match(r"BLAS_INFO=(\w+)", shown) or "none"
    version = _match(r"Math Kernel Library Version (\S+?)-", shown) if name == "mkl" else ""
    return f"{name} {version}".strip()


def _onednn(shown: str, torch) -> str:
    version = _match(r"MKL-DNN (v[\d.]+)", shown)
    if not version or not torch.backends.mkldnn.is_available():
        return "none"
    return version if torch.backends.mkldnn.enabled else f"{version} disabled"


def _nvidia_driver() -> str:
    try:
        with open("/proc/driver/nvidia/version") as f:
            return _match(r"Kernel Module\s+(\S+)", f.read()) or "unknown"
    except OSError:
        return "unknown"


def _match(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    return m.group(1) if m else ""
