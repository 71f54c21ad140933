"""``python sweeps/run.py grid=generation [ar.KEY=VALUE ...]``: generator runs on tokenizer grid points.

Each point of sweeps/grids/generation.py names a tokenizer grid point (paper terms) and the generator's
settings (``ar.model``, ``ar.cfg_scale``; any fvq.generation.ar.ARConfig key as ``ar.KEY=VALUE`` on the command line).
The tokenizer point resolves to its signature and run dir (sweeps/plan.py) exactly as in the tokenizer
grids, so a tokenizer shared with Tables 1/3 trains once; a missing one is trained first by the local
launcher, then the generator runs (one at a time, in this process) under one parent MLflow run.

``seeds=3`` (or ``seeds=0,4,7``) trains each generator once per seed on the same tokenizer (seed 0 keeps
the signature a point has without seeds): gFID as mean +- sd over generator seeds, only the tokens differing.

A generator run is ``<runs>/gen-<signature>``, its signature a hash of the tokenizer signature and the
generator's science keys. At ``scale=cpu`` every AR size becomes ``tiny`` and CFG 1.0 (a generator trained
for minutes gains nothing from guidance), so the paper's L/XL points collapse to one run per tokenizer.

Bad input, one line and exit 2 before anything is written or submitted: a tokenizer run that FAILED, an
``ar.vocab`` other than the tokenizer's codebook size, CFG < 1 or CFG > 1 with ``ar.class_dropout=0``,
a token cache beside the tokenizer written by another tokenizer, an unknown ``ar.`` key.
With ``launcher=slurm`` nothing runs here: the missing tokenizers go out as one job array (sweeps/launcher.py),
then each generator is its own job with ``--dependency=afterok:<its tokenizer's job>`` (a tokenizer already
queued or running on Slurm is waited for, never submitted twice; a finished one means no dependency). A
generator whose tokenizer fails never starts (Slurm leaves it DependencyNeverSatisfied; ``status=true``
shows it). A relaunch skips generators that are queued, running or finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, fields
from typing import Any

import submitit

from fvq.generation.ar import ARConfig, ar_overrides
from fvq.core.config import ConfigError
from fvq.core.errors import one_line
from fvq.core.rundir import read_json, write_json, write_status
from fvq.generation.tokens import cache_path, check_tokenizer, token_cache
from sweeps import grids
from sweeps.launcher import classify
from sweeps.options import Options, parse_seeds
from sweeps.plan import Planned, plan_point

# ARConfig keys that do not change what a generator run computes (like fvq.core.config.NON_SCIENCE_KEYS)
AR_NON_SCIENCE = {"tokenizer", "device", "threads", "log_every", "ckpt_every"}
# Paper scale (Table 6 generation column, section 4.3): 300 epochs of ImageNet-1k at batch 256 with the
# recipe's lr exactly, 50,000 samples for gFID; the GPU does it (bf16 autocast in fvq/generation/ar.py).
PAPER_AR = {"lr_scale": 1.0, "batch": 256, "steps": 300 * 1_281_167 // 256, "train_images": 1_281_167,
            "samples": 50_000, "device": "cuda", "threads": 0, "log_every": 500, "ckpt_every": 5000}


@dataclass
class GenPlanned:
    sig: str
    run_dir: str
    tok: Planned
    tok_name: str
    cfg: ARConfig
    state: str


def ar_signature(tok_sig: str, cfg: ARConfig) -> str:
    ref = ARConfig()
    delta = {f.name: getattr(cfg, f.name) for f in fields(cfg)
             if f.name not in AR_NON_SCIENCE and getattr(cfg, f.name) != getattr(ref, f.name)}
    blob = json.dumps({"tokenizer": tok_sig, **delta}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def split_args(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """(harness and tokenizer arguments, ``ar.`` overrides without the prefix)."""
    rest, ar = [], {}
    for a in argv:
        if a.startswith("ar."):
            k, sep, v = a[3:].partition("=")
            if not sep:
                raise ConfigError(f"argument {a!r} is not key=value")
            ar[k] = v
        else:
            rest.append(a)
    return rest, ar


def plan_generation(opts: Options, overrides: dict[str, Any], ar_args: dict[str, str]) -> list[GenPlanned]:
    out: dict[str, GenPlanned] = {}
    # seeds= is the generator's seed axis (init, batch order, sampling); the tokenizer keeps its own seed, as
    # in the paper's comparison, where only the tokens differ
    seeds = parse_seeds(opts.seeds) if opts.seeds else (None,)
    if opts.seeds and "seed" in ar_args:
        raise ConfigError(f"generator seed given twice: seeds={opts.seeds} and ar.seed={ar_args['seed']} (give one)")
    for i, point in enumerate(grids.load("generation").points()):
        where = f"grid generation point {i}"
        tok = plan_point(point["tokenizer"], opts.scale, overrides, opts.runs_dir, "generation", where=where)
        if tok.state == "failed":
            raise ConfigError(f"{where}: tokenizer run {tok.sig} FAILED ({tok.detail or 'no reason'}); "
                              f"relaunch its grid with retry=true first")
        ar = {"model": point["ar.model"], "cfg_scale": point["ar.cfg_scale"], **PAPER_AR}
        if opts.scale == "cpu":
            ar = {"model": "tiny", "cfg_scale": 1.0}
        for seed in seeds:
            try:
                cfg = ar_overrides({**ar, **ar_args, **({} if seed is None else {"seed": seed}),
                                    "tokenizer": tok.run_dir})
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from None
            if cfg.vocab and cfg.vocab != tok.cfg.quant.codebook_size:
                raise ConfigError(f"{where}: ar.vocab={cfg.vocab} but tokenizer {tok.sig} has codebook size "
                                  f"{tok.cfg.quant.codebook_size}")
            if tok.state == "finished" and os.path.exists(cache_path(tok.run_dir, "train", cfg.train_images)):
                check_tokenizer(tok.run_dir)
                token_cache(tok.run_dir, "train", cfg.train_images)  # a foreign cache: TokenizerError
            sig = ar_signature(tok.sig, cfg)
            run_dir = os.path.join(opts.runs_dir, f"gen-{sig}")
            out.setdefault(sig, GenPlanned(sig, run_dir, tok, point["tokenizer_name"], cfg, classify(run_dir)[0]))
    return list(out.values())


def todo(p: GenPlanned, retry: bool) -> bool:
    """A generator to (re)start: never one that is finished, or queued/running somewhere (active)."""
    return p.state in ("missing", "stalled", "preempted") or (p.state == "failed" and retry)


class GenJob(submitit.helpers.Checkpointable):
    """One generator run, tracked: the MLflow run (bound to the run dir, so a requeued job keeps it), the AR
    curves, gFID / precision / recall with the reasons for what is missing, the sample grid. Called in the
    launcher's process (local) or as a Slurm job; a requeue (Checkpointable) resumes from ``ckpt.pt``."""

    def __init__(self, p: GenPlanned, uri: str, experiment: str, commit: str, parent: str):
        self.run_dir, self.cfg, self.uri, self.experiment = p.run_dir, p.cfg, uri, experiment
        self.name = f"generation {p.tok_name} GPT-{p.cfg.model} cfg={p.cfg.cfg_scale}" + \
            (f" seed={p.cfg.seed}" if p.cfg.seed else "")
        self.tags = {"signature": f"gen-{p.sig}", "tokenizer": p.tok.sig, "commit": commit,
                     "grid.generation": "1", "mlflow.parentRunId": parent}

    def __call__(self) -> dict:
        from fvq.generation.ar import train_ar
        from sweeps.tracking import MLflowSink, open_run

        env = submitit.JobEnvironment() if "SUBMITIT_EXECUTOR" in os.environ else None
        if env is not None and env.num_tasks > 1:  # data-parallel generator: torchrun-style variables
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        main = int(os.environ.get("RANK", "0")) == 0
        sink = MLflowSink(self.uri, open_run(self.uri, self.experiment, self.run_dir, self.name, self.tags)) \
            if main else None
        try:
            res = train_ar(self.cfg, self.run_dir)
        except Exception as e:
            if main:
                write_status(self.run_dir, "FAILED", reason=one_line(e)[:300])
                sink.finish("FAILED")
            raise
        if main:
            _log(sink, self.run_dir, self.cfg, res)
        return res


def _log(sink, run_dir: str, cfg: ARConfig, res: dict) -> None:
    sink.log_params({f"ar.{k}": v for k, v in res["config"].items()})
    rows = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            rows += [(k, float(v), int(r["step"])) for k, v in r.items() if k != "step"]
    rows += [(f"gen/{k}", float(v), cfg.steps) for k, v in res["metrics"].items()]
    for i in range(0, len(rows), 1000):
        sink.log_metrics(rows[i:i + 1000])
    sink.set_tags({f"missing.{k}": v[:250] for k, v in res["missing"].items()})
    sink.log_artifact(os.path.join(run_dir, "samples.png"))
    sink.finish("FINISHED")


def table(plans: list[GenPlanned]) -> str:
    rows = [f"{'signature':<11} {'state':<9} {'tokenizer':<22} {'AR':<6} {'cfg':<5} {'seed':<5} gfid"]
    for p in plans:
        g = read_json(os.path.join(p.run_dir, "final.json")).get("metrics", {}).get("gfid")
        rows.append(f"{p.sig:<11} {p.state:<9} {p.tok_name + ' ' + p.tok.sig + ' (' + p.tok.state + ')':<22} "
                    f"{p.cfg.model:<6} {p.cfg.cfg_scale:<5} {p.cfg.seed:<5} {'' if g is None else f'{g:.2f}'}")
    return "\n".join(rows)


def run_generation(opts: Options, overrides: dict[str, Any], ar_args: dict[str, str]) -> int:
    from sweeps.launcher import launch_local
    from sweeps.plan import prepare_launch, write_run
    from sweeps.tracking import end_launch, open_launch

    plans = plan_generation(opts, overrides, ar_args)
    if opts.dry or opts.status:
        print(f"grid=generation scale={opts.scale} runs_dir={opts.runs_dir} ({len(plans)} generator runs)")
        print(table(plans))
        return 0
    launch = prepare_launch(opts)
    parent = open_launch(opts.tracking_uri, opts.experiment, f"grid=generation scale={opts.scale}",
                         {"commit": launch.label, "grids": "generation", "launcher": opts.launcher})
    gens = [p for p in plans if todo(p, opts.retry)]
    # each tokenizer a generator needs, once; one that is queued or running is waited for, never resubmitted
    toks = {p.tok.sig: p.tok for p in gens if p.tok.state in ("missing", "stalled", "preempted")}
    for t in toks.values():
        t.grids = ["generation"]
        write_run(t, opts.scale, launch, parent)
    if opts.launcher == "slurm":
        return _submit(gens, toks, opts, launch, parent)
    failed = [s for s, r in launch_local(list(toks.values()), opts.runs_dir, opts.tracking_uri, opts.experiment,
                                         opts.parallel).items() if r.startswith("failed")] if toks else []
    for p in gens:
        if p.tok.sig in failed:
            continue
        try:
            GenJob(p, opts.tracking_uri, opts.experiment, launch.label, parent)()
            p.state = "finished"
        except Exception as e:
            print(f"[fvq] generator {p.sig} failed: {one_line(e)}", file=sys.stderr, flush=True)
            failed.append(p.sig)
    end_launch(opts.tracking_uri, parent, "FAILED" if failed else "FINISHED")
    print(table(plans))
    return 1 if failed else 0


def _submit(gens: list[GenPlanned], toks: dict[str, Planned], opts: Options, launch, parent: str) -> int:
    """Slurm: the missing tokenizers as one job array, then one job per generator after its tokenizer."""
    from sweeps.launcher import LaunchError, launch_slurm, pin_code, slurm_executor
    from sweeps.tracking import end_launch

    try:
        ids = dict(zip(toks, launch_slurm(list(toks.values()), opts.runs_dir, opts.tracking_uri, opts.experiment,
                                          launch.spec, launch.commit, launch.dirty))) if toks else {}
        code, label = pin_code(launch.commit, opts.runs_dir, launch.dirty)
        afters = [(p, ids.get(p.tok.sig) or (read_json(os.path.join(p.tok.run_dir, "job.json")).get("job_id")
                                             if p.tok.state == "active" else None)) for p in gens]
        # one executor; a dependency once set cannot be unset (update_parameters ignores None), so the
        # generators whose tokenizer is already finished go first
        lines, ex = [], slurm_executor(launch.spec, code, opts.runs_dir)
        for p, after in sorted(afters, key=lambda pa: bool(pa[1])):
            if after:
                ex.update_parameters(slurm_dependency=f"afterok:{after}")
            try:
                job = ex.submit(GenJob(p, opts.tracking_uri, opts.experiment, label, parent))
            except Exception as e:
                raise LaunchError(f"sbatch refused generator {p.sig}: {str(e).strip().splitlines()[-1][:300]}") \
                    from None
            os.makedirs(p.run_dir, exist_ok=True)
            write_json(os.path.join(p.run_dir, "job.json"), {"launcher": "slurm", "job_id": str(job.job_id),
                                                             "after": after or "", "commit": label})
            lines.append(f"generator {p.sig} job {job.job_id}" + (f" afterok:{after}" if after else ""))
    except LaunchError as e:
        end_launch(opts.tracking_uri, parent, "FAILED", failure=one_line(e)[:250])
        raise
    end_launch(opts.tracking_uri, parent)
    print("\n".join([f"submitted {len(ids)} tokenizer job(s), {len(lines)} generator job(s) from commit "
                      f"{launch.label[:10]}", *lines, f"watch: python sweeps/run.py grid=generation "
                      f"scale={opts.scale} status=true"]))
    return 0
