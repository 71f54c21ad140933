"""Planning a launch, shared by grids (sweeps/run.py), searches (sweeps/search.py) and generation.

- `plan_point`: one point in the paper's terms -> resolved config, checked (config values, the quantizer
  built on the meta device, the architecture), signed, compared with what its run dir holds, classified.
- `plan_grids`: every point of one or several grids (a point shared by grids is one run, tagged with each).
- `prepare_launch`: what a launch needs before anything is written: the commit (and whether the tree is
  dirty), the Slurm spec (a dirty tree refused unless force=true), a reachable tracking store.
- `write_run`: the run dir's config.json and tags.json (commit label, grids, run name, parent launch run).
- `check_writable` / `run_bytes`: the runs dir takes files and has room for what a launch will write
  (a full or read-only disk is named before anything is claimed; sweeps/submit.py calls them).
Everything raises a one-line `fvq.core.errors.SetupError` before anything is submitted.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from fvq.core.config import Config, ConfigError
from fvq.core.rundir import prepare_run_dir, read_json, write_json
from sweeps import grids
from sweeps.identity import check_stored, science_delta, signature
from sweeps.launcher import LaunchError, git_commit, refuse_dirty
from sweeps.options import Options
from sweeps.scale import resolve
from sweeps.state import classify


@dataclass
class Planned:
    sig: str
    run_dir: str
    overrides: dict[str, Any]
    state: str          # sweeps/state.py: missing | finished | pruned | active | failed | preempted | stalled
    detail: str = ""
    cfg: Config | None = None
    grids: list[str] = field(default_factory=list)  # every grid of this launch that holds the point
    name: str = ""      # the MLflow run name: grid, then the point in the paper's terms


@dataclass(frozen=True)
class Launch:
    commit: str
    dirty: bool
    spec: Any = None    # slurm.spec.Spec for launcher=slurm

    @property
    def label(self) -> str:
        """The commit tag of every run: says when the tree was not clean."""
        return f"{self.commit}+dirty" if self.dirty else self.commit


# Paper symbols for the keys grids vary (section 3.2, Fig. 6, Table 3); other keys keep their last part.
SYMBOLS = {"quant.codebook_size": "K", "quant.group": "p", "quant.depth": "N", "quant.latent_dim": "d'",
           "model.channel": "d", "epochs": "epochs", "quant.projector": "", "sched.kind": "", "model.arch": ""}


def point_name(where: str, point: dict[str, Any]) -> str:
    """``patch_size {projector: vqbridge, K: 16384, p: 16}`` -> ``patch_size vqbridge K=16k p=16``."""
    parts = [where]
    for key, value in point.items():
        sym = SYMBOLS.get(key, key.split(".")[-1])
        if key == "quant.codebook_size" and int(value) >= 1024:
            value = f"{int(value) // 1000}k"  # the paper's spelling: 16k, 65k, 262k
        if isinstance(value, bool):
            parts.append(sym if value else f"no-{sym}")
        else:
            parts.append(f"{sym}={value}" if sym else str(value))
    return " ".join(parts)


def plan_point(point: dict[str, Any], scale: str, overrides: dict[str, Any], runs_root: str, label: str,
               where: str = "", files: bool = True) -> Planned:
    """One point (paper terms) -> a checked, classified `Planned`. ``label`` (a grid or search name) starts
    its MLflow run name; ``where`` names the point in errors (default: the label); ``files``: also check
    data and weights on this machine (local launches; a cluster's jobs see the cluster's file system)."""
    import torch

    from fvq.build import build_quantizer, check_buildable

    try:
        cfg = resolve(point, scale, overrides)
        check_buildable(cfg, files)
        with torch.device("meta"):  # builds the projector to validate K/p/d'/heads, allocates nothing
            build_quantizer(cfg)
    except ValueError as e:  # ConfigError included: say which point
        raise ConfigError(f"{where or label} {point}: {e}") from None
    sig = signature(cfg)
    run_dir = os.path.join(runs_root, sig)
    check_stored(cfg, run_dir)
    state, detail = classify(run_dir)
    return Planned(sig, run_dir, science_delta(cfg), state, detail, cfg, name=point_name(label, point))


def grid_names(spec: str) -> list[str]:
    """``patch_size`` -> [patch_size]; ``depth,latent_dim`` -> both; ``all`` -> every grid (one launch)."""
    names = grids.names() if spec == "all" else [n for n in spec.split(",") if n]
    for n in names:
        grids.load(n)  # an unknown name is a ConfigError listing the valid ones
    return names


def plan_grids(spec: str, scale: str, overrides: dict[str, Any], runs_root: str,
               files: bool = True, seeds: tuple[int, ...] = ()) -> list[Planned]:
    """Every point of the grids named by ``spec``, in grid order, one `Planned` per distinct run; with
    ``seeds`` every point once per seed (the seed is a science key: part of the signature, except seed 0,
    the default, which keeps the signature the point has without a seed axis)."""
    out: dict[str, Planned] = {}
    for name in grid_names(spec):
        for i, point in enumerate(grids.load(name).points()):
            for seed in seeds or (None,):
                ov = overrides if seed is None else {**overrides, "seed": seed}
                p = plan_point(point, scale, ov, runs_root, name, where=f"grid {name} point {i}", files=files)
                if seed is not None:
                    p.name = f"{p.name} seed={seed}"
                p = out.setdefault(p.sig, p)
                if name not in p.grids:
                    p.grids.append(name)
    return list(out.values())


def prepare_launch(opts: Options) -> Launch:
    """Every check a launch makes before writing anything (``dry=true`` makes them too): the Slurm spec, a
    dirty tree refused for Slurm unless force=true (not for a dry run), the tracking URI and store, the
    experiment name, a writable runs dir."""
    from sweeps.tracking import check_experiment_name, check_reachable

    commit, dirty = git_commit()
    spec = None
    if opts.launcher == "slurm":
        from slurm.spec import load_spec

        spec = load_spec(opts.slurm)
        if not opts.dry:
            refuse_dirty(dirty, opts.force)
    check_reachable(opts.tracking_uri)
    check_experiment_name(opts.experiment)
    check_writable(opts.runs_dir)
    return Launch(commit, dirty, spec)


PROBE = 1 << 20  # bytes written by the launch check: an empty file can still be created on a full disk


def check_writable(path: str, need: int = PROBE, runs: int = 0) -> None:
    """``runs_dir`` (or the nearest existing folder above it, where it will be created) takes real bytes (a
    1 MiB probe, written and synced) and has ``need`` bytes free (`run_bytes` summed over the ``runs`` a
    launch starts): a full or read-only disk is named before anything is submitted."""
    from fvq.core.errors import DISK

    probe = path
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        with tempfile.TemporaryFile(dir=probe) as f:
            f.write(bytes(PROBE))
            f.flush()
            os.fsync(f.fileno())
        st = os.statvfs(probe)
    except OSError as e:
        raise LaunchError(f"runs_dir={path} is not writable ({probe}: {DISK.get(e.errno, e.strerror)})") from None
    free = st.f_bavail * st.f_frsize
    if free < need:
        what = f"the {runs} runs to start need" if runs else "a launch needs"
        raise LaunchError(f"runs_dir={path}: {free / 2**20:,.0f} MiB free on its disk, {what} about "
                          f"{need / 2**20:,.0f} MiB (checkpoints; sweeps/plan.py run_bytes)")


def run_bytes(cfg: Config) -> int:
    """Disk a run needs at most: two checkpoints (the old one stays until the new one is whole), each the
    weights and Adam's two moments of the model and discriminator in float32, the codebook, 1 MiB of logs."""
    import torch

    from fvq.build import build_model
    from fvq.vq.losses import PatchGAN

    with torch.device("meta"):  # parameter counts only, nothing allocated
        nets = [build_model(cfg), *([PatchGAN()] if cfg.loss.disc_weight > 0 else [])]
    params = sum(t.numel() for net in nets for t in net.parameters())
    return 2 * 3 * 4 * params + 4 * cfg.quant.codebook_size * cfg.model.channel + (1 << 20)


def check_eval_sets(plans: list[Planned]) -> None:
    """Every second evaluation set (eval.extra=coco:PATH) exists and holds images: else one line."""
    from fvq.build import build_extra_datasets

    for extra in sorted({p.cfg.eval.extra for p in plans if p.cfg.eval.extra}):
        try:
            build_extra_datasets(next(p.cfg for p in plans if p.cfg.eval.extra == extra))
        except FileNotFoundError as e:
            raise ConfigError(f"{e} (give eval.extra=coco:PATH to COCO 2017 val, or eval.extra= for none)") from None


def write_run(p: Planned, scale: str, launch: Launch, parent_run_id: str = "") -> None:
    """config.json (the science, read back by the job) and tags.json, merged over every launch that holds
    the run: its grids, the commit label, its MLflow name and the launch (parent) run it was first made by."""
    prepare_run_dir(p.cfg, p.run_dir)
    path = os.path.join(p.run_dir, "tags.json")
    tags = read_json(path)
    tags.update({"signature": p.sig, "commit": launch.label, "scale": scale,
                 **{f"grid.{n}": "1" for n in p.grids}})
    tags["grids"] = ",".join(sorted({*tags.get("grids", "").split(","), *p.grids} - {""}))
    tags.setdefault("name", p.name or p.sig)
    if parent_run_id:
        tags.setdefault("mlflow.parentRunId", parent_run_id)
    write_json(path, tags)
