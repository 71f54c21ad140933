"""Cluster specs: ``slurm/<name>.yaml`` -> a frozen `SlurmSpec` -> submitit ``update_parameters`` keys.

    spec = load_spec("a100x1")                   # a name in slurm/, or a path to a .yaml file
    executor = submitit.AutoExecutor(folder=..., cluster="slurm")
    executor.update_parameters(**spec.submitit_params())

Every key is documented in slurm/README.md. Unknown keys, wrong types and impossible values are a
ValueError naming the spec and the key, so a bad spec stops a launch before anything is submitted.
GPUs are always asked for as typed GRES (``--gres=gpu:a100:8``), one style for every spec.
This module imports only the standard library and PyYAML: never fvq training code.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from fvq.core.errors import SetupError

SPEC_DIR = os.path.dirname(os.path.abspath(__file__))


class SpecError(SetupError, ValueError):
    """A spec that cannot be submitted; one line naming the spec and the key."""


@dataclass(frozen=True)
class SlurmSpec:
    partition: str
    account: str = ""                 # "" = none (the user's default account)
    qos: str = ""                     # "" = none (the partition's default QOS)
    nodes: int = 1
    tasks_per_node: int = 1           # processes (data-parallel ranks) per node: one per GPU
    gpus_per_node: int = 0
    gpu_type: str = ""                # GRES type: "a100" -> --gres=gpu:a100:N; "" -> --gres=gpu:N
    cpus_per_task: int = 1
    mem_gb: int = 4                   # per node
    timeout_min: int = 60
    constraint: str = ""              # node features, e.g. "a100&ib"; "" = none
    setup: tuple[str, ...] = ()       # shell lines run in the batch script before the job starts
    array_parallelism: int = 256      # at most this many array tasks of one launch run at once
    max_requeues: int = 3             # restarts of one run (preemption, time limit) before it is FAILED
    additional_parameters: Mapping[str, Any] = field(default_factory=dict, hash=False)  # other sbatch flags
    name: str = field(default="", compare=False)  # the spec's name (file stem), for messages

    def __post_init__(self) -> None:
        label = self.name or "<inline>"
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "setup":
                if isinstance(value, list):
                    object.__setattr__(self, "setup", tuple(value))
                    value = self.setup
                if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                    raise SpecError(f"slurm spec {label}: setup must be a list of shell lines (strings)")
            elif f.name == "additional_parameters":
                if not isinstance(value, Mapping) or not all(
                        isinstance(k, str) and (v is True or isinstance(v, (str, int)) and not isinstance(v, bool))
                        for k, v in value.items()):
                    raise SpecError(f"slurm spec {label}: additional_parameters must map sbatch flag names "
                                     f"to str or int values, or true for a flag without a value")
                object.__setattr__(self, f.name, dict(value))  # a copy: the caller's dict cannot change it
            elif f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise SpecError(f"slurm spec {label}: {f.name}={value!r}: expected int")
            elif f.type == "str" and not isinstance(value, str):
                raise SpecError(f"slurm spec {label}: {f.name}={value!r}: expected str")
        if not self.partition:
            raise SpecError(f"slurm spec {label} has no partition")
        for key in ("nodes", "tasks_per_node", "cpus_per_task", "mem_gb", "timeout_min", "array_parallelism"):
            if getattr(self, key) < 1:
                raise SpecError(f"slurm spec {label}: {key}={getattr(self, key)}: must be >= 1")
        for key in ("gpus_per_node", "max_requeues"):
            if getattr(self, key) < 0:
                raise SpecError(f"slurm spec {label}: {key}={getattr(self, key)}: must be >= 0")
        if ":" in self.gpu_type or "," in self.gpu_type:
            raise SpecError(f"slurm spec {label}: gpu_type={self.gpu_type!r}: a bare GRES type such as a100")
        overlap = {k.replace("-", "_") for k in self.additional_parameters} & {
            "partition", "account", "qos", "nodes", "ntasks_per_node", "gres", "gpus_per_node",
            "cpus_per_task", "mem", "time", "constraint", "array"}
        if overlap:
            raise SpecError(f"slurm spec {label}: additional_parameters repeats {sorted(overlap)}; "
                             f"use the spec's own keys")

    @property
    def gres(self) -> str:
        """The GPU request per node, e.g. ``gpu:a100:8``; "" without GPUs."""
        if self.gpus_per_node == 0:
            return ""
        return f"gpu:{self.gpu_type}:{self.gpus_per_node}" if self.gpu_type else f"gpu:{self.gpus_per_node}"

    def submitit_params(self) -> dict[str, Any]:
        """Keyword arguments for ``submitit.AutoExecutor(cluster="slurm").update_parameters``."""
        params: dict[str, Any] = {
            "slurm_partition": self.partition,
            "nodes": self.nodes,
            "tasks_per_node": self.tasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "mem_gb": self.mem_gb,
            "timeout_min": self.timeout_min,
            "slurm_array_parallelism": self.array_parallelism,
        }
        optional = {"slurm_account": self.account, "slurm_qos": self.qos, "slurm_gres": self.gres,
                    "slurm_constraint": self.constraint, "slurm_setup": list(self.setup),
                    "slurm_additional_parameters": dict(self.additional_parameters)}
        params.update({k: v for k, v in optional.items() if v})
        return params

    def replace(self, **changes: Any) -> "SlurmSpec":
        """A copy with some keys changed, checked like a loaded spec."""
        return dataclasses.replace(self, **changes)


KEYS = tuple(f.name for f in dataclasses.fields(SlurmSpec) if f.name != "name")


def names() -> list[str]:
    """The specs shipped in slurm/."""
    return sorted(f[:-5] for f in os.listdir(SPEC_DIR) if f.endswith(".yaml"))


def load_spec(name_or_path: str) -> SlurmSpec:
    """``load_spec("a100x1")`` reads slurm/a100x1.yaml; a value with a "/" or a .yaml/.yml suffix is a path."""
    is_path = os.sep in name_or_path or "/" in name_or_path or name_or_path.endswith((".yaml", ".yml"))
    path = name_or_path if is_path else os.path.join(SPEC_DIR, f"{name_or_path}.yaml")
    label = os.path.splitext(os.path.basename(path))[0]
    if not os.path.isfile(path):
        where = f"no file {path}" if is_path else f"known specs: {', '.join(names())}"
        raise SpecError(f"slurm spec {name_or_path!r} not found ({where})")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise SpecError(f"slurm spec {label}: {path} is not valid YAML: "
                             f"{' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"slurm spec {label}: {path} must hold a mapping of keys (see slurm/README.md)")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise SpecError(f"slurm spec {label}: unknown key {', '.join(map(repr, unknown))} "
                         f"(valid keys: {', '.join(KEYS)})")
    # An empty YAML value (`account:`) means "none", like "".
    str_keys = {f.name for f in dataclasses.fields(SlurmSpec) if f.type == "str"}
    values = {k: ("" if v is None and k in str_keys else v) for k, v in raw.items()}
    if "partition" not in values:
        raise SpecError(f"slurm spec {label} has no partition")
    return SlurmSpec(**values, name=label)
