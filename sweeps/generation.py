"""``python sweeps/run.py grid=generation [ar.KEY=VALUE ...]``: generator runs on tokenizer grid points.

Each point of sweeps/grids/generation.py names a tokenizer grid point (paper terms) and the generator's
settings (``ar.model``, ``ar.cfg_scale``; any fvq.generation.ar.ARConfig key as ``ar.KEY=VALUE`` on the command line).
The tokenizer point resolves to its signature and run dir (sweeps/plan.py) exactly as in the tokenizer
grids, so a tokenizer shared with Tables 1/3 trains once; a missing one is trained first, then the
generators, both through the one submit path (sweeps/submit.py: claimed run dirs, bounded requeues) under one
parent MLflow run. A generator not yet started whose training a finished run already did (the same keys but
those of its evaluation: CFG, samples, the held-out loss) takes that run's weights and only evaluates
(fvq/generation/shared.py): a calibration run of the benchmark's size and steps is its seed-0 generator.

``seeds=3`` (or ``seeds=0,4,7``) makes replicates: replicate s is the tokenizer at seed s and its generator at
seed s (seed 0 keeps the signatures a point has without seeds). The tokenizer is the unit of claim 11 ("FVQ
tokens give a better generator"), so replicates of one tokenizer kind differ in their tokenizer, and the
claim pairs the two kinds by seed (analysis/tables/claims.py).

The cpu generation benchmark (claim 11; its command and cost in results/README.md): Fashion-MNIST (10
real classes; gFID of 2,000 samples against the official test images, whose disjoint halves give the noise
floor), generator size and steps from results/generation_calibration.csv, CFG 1.75 (the paper's, for GPT-L)
with 1.0, 1.5 and 2.0 scored from the same generator (``ar.cfg_sweep``): ``python sweeps/run.py
grid=generation seeds=3``, then ``python -m analysis.collect grid=generation seeds=3``.

A generator run is ``<runs>/gen-<signature>``, its signature a hash of the tokenizer signature and the
generator's science keys (sweeps/identity.py). At ``scale=cpu`` the paper's L/XL points collapse to one run
per tokenizer: the benchmark's generator (``CPU_AR``) on Fashion-MNIST tokenizers (``CPU_TOKENIZER``).

Bad input, one line and exit 2 before anything is written or submitted: a tokenizer run that FAILED, an
``ar.vocab`` other than the tokenizer's codebook size, CFG < 1 or CFG > 1 with ``ar.class_dropout=0``,
a token cache beside the tokenizer written by another tokenizer, an unknown ``ar.`` key, an ``ar.ref_stats``
file that is missing, unreadable or not mu (2048,) / sigma (2048, 2048) (gFID's real side; the plan signs its
absolute path, so a job started in another directory reads the same file).
With ``launcher=slurm`` nothing runs here: the missing tokenizers go out as one job array (sweeps/launcher.py),
then each generator is its own job with ``--dependency=afterok:<its tokenizer's job>`` (a tokenizer already
queued or running on Slurm is waited for, never submitted twice; a finished one means no dependency). A
generator whose tokenizer fails never starts (Slurm leaves it DependencyNeverSatisfied; ``status=true``
shows it). A relaunch skips generators that are queued, running or finished.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from typing import Any

import submitit

from fvq.generation.ar import ARConfig, ar_overrides, paper_recipe, sweep as ar_sweep
from fvq.core.config import ConfigError
from fvq.core.errors import one_line
from fvq.eval.card import card_tags, load_ref_stats
from fvq.core import dist, environment
from fvq.core.checkpoint import Preempted
from fvq.core.rundir import read_json, read_status, write_status
from fvq.core.track import read_jsonl, record
from fvq.generation.shared import SharedTrainingError, check_trained, find_trained
from fvq.generation.tokens import cache_path, check_tokenizer, labelled_dataset, token_cache
from sweeps import grids
from sweeps.job import count_start
from sweeps.identity import ar_signature, check_stored_ar
from sweeps.options import Options, seeds_text
from sweeps.plan import Planned, plan_point
from sweeps.state import classify, progress
from sweeps.submit import Batch, Launching, Live, exit_code, no_dependency, plan_line, summary, to_submit

# ARConfig keys that do not change what a generator run computes (like fvq.core.config.NON_SCIENCE_KEYS)
# Paper scale: per model the FVQ authors' recipe (fvq/generation/ar.py paper_recipe: GPT-L 300 epochs at
# batch 2,048, GPT-XL 350 at 1,024, lr 1e-4 x batch / 256, ten-crop + flip codes), 50,000 samples for gFID;
# the GPU does it (bf16 autocast in fvq/generation/ar.py).
PAPER_AR = {"samples": 50_000, "device": "cuda", "threads": 0, "log_every": 500, "ckpt_every": 5000}
# cpu scale: the claim-11 benchmark (module docstring). Fashion-MNIST gives the generator 10 real classes to
# condition on (the built-in photos have 22 source images). GPT-S for 3,000 steps, ~0.9 core-hour per
# generator with its evaluation (``CPU_RATES``), ~5.5 for the benchmark: the committed rows' generator. The
# calibration (results/generation_calibration.csv) finds it under-fits FVQ's richer tokens more than plain
# VQ's (0.18 vs 0.065 nats left after 3,000 steps; GPT-M gains FVQ's tokens three times what it gains plain
# VQ's), so the verdict holds for this generator only; ``ar.model=M ar.steps=6000`` narrows that at ~3.8
# core-hours per generator (~23 for the benchmark, each run longer than 3 h of wall time).
# CFG 1.75 is the paper's for GPT-L, the sweep scores 1, 1.5 and 2 from the same generator.
CPU_TOKENIZER = {"data.source": "fashion_mnist"}
# What a cpu generator costs on the 2-core AMD EPYC VMs (Zen 4 / Zen 5), one core per run and two runs side
# by side, at the benchmark's shape (1,024 codes, 64 tokens): model -> (training CPU-s per step at batch 64;
# evaluation CPU-s per generated image: sampling at each CFG scale, Inception features, precision / recall).
# Measured: S from a benchmark run's time record (1,389 CPU-s for 3,000 steps; 1,916 CPU-s for 8,000 images,
# the real side's 4,000 features included), M and tiny from their calibration curves' img/s (M's evaluation
# 20-28 min of wall time for 8,000 images); GPT-tiny's evaluation was never timed: S's stands in, an upper
# bound.
CPU_RATES = {"tiny": (0.10, 0.24), "S": (0.46, 0.24), "M": (2.03, 0.18)}
CPU_AR = {"model": "S", "steps": 3000, "train_images": 60_000, "samples": 2000, "cfg_scale": 1.75,
          "cfg_sweep": "1,1.5,2", "ckpt_every": 500}


@dataclass
class GenPlanned:
    sig: str
    run_dir: str
    tok: Planned
    tok_name: str
    cfg: ARConfig
    state: str


def plan_generation(opts: Options, overrides: dict[str, Any], ar_args: dict[str, str]) -> list[GenPlanned]:
    out: dict[str, GenPlanned] = {}
    # seeds= is the replicate axis of claim 11, whose unit is the tokenizer: replicate s is tokenizer seed s
    # with its generator at seed s (seed 0 keeps the signatures a point has without seeds)
    seeds = opts.seeds or (None,)
    if opts.seeds and "seed" in ar_args:
        raise ConfigError(f"generator seed given twice: seeds={seeds_text(opts.seeds)} and ar.seed={ar_args['seed']} "
                          f"(give one)")
    if ar_args.get("ref_stats"):  # a bad file: one line (RefStatsError) here, before anything trains
        path = ar_args["ref_stats"]
        ar_args = {**ar_args, "ref_stats": load_ref_stats(path, f"ar.ref_stats={path}")["path"]}
    for i, point in enumerate(grids.load("generation").points()):
        where = f"grid generation point {i}"
        ar = {"model": point["ar.model"], "cfg_scale": point["ar.cfg_scale"], **PAPER_AR,
              **paper_recipe(point["ar.model"])}
        tok_point = point["tokenizer"]
        if opts.scale == "cpu":
            ar, tok_point = CPU_AR, {**tok_point, **CPU_TOKENIZER}
        for seed in seeds:
            tok = plan_point(tok_point, opts.scale, {**overrides, **({} if seed is None else {"seed": seed})},
                             opts.runs_dir, "generation", where=where)
            if tok.state == "failed":
                raise ConfigError(f"{where}: tokenizer run {tok.sig} FAILED ({tok.detail or 'no reason'}); "
                                  f"relaunch its grid with retry=true first")
            try:
                cfg = ar_overrides({**ar, **ar_args, **({} if seed is None else {"seed": seed}),
                                    "tokenizer": tok.run_dir})
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from None
            n_real = len(labelled_dataset(tok.cfg, "val", None))  # the gFID reference draws from these
            if cfg.samples > n_real and not cfg.ref_stats:
                raise ConfigError(f"{where}: ar.samples={cfg.samples} but the tokenizer's val set has {n_real} real "
                                  f"images (gFID compares as many real images as samples)")
            if cfg.vocab and cfg.vocab != tok.cfg.quant.codebook_size:
                raise ConfigError(f"{where}: ar.vocab={cfg.vocab} but tokenizer {tok.sig} has codebook size "
                                  f"{tok.cfg.quant.codebook_size}")
            if tok.state == "finished" and os.path.exists(cache_path(tok.run_dir, "train", cfg.train_images, cfg.aug)):
                check_tokenizer(tok.run_dir)
                token_cache(tok.run_dir, "train", cfg.train_images, aug=cfg.aug)  # a foreign cache: TokenizerError
            sig = ar_signature(tok.sig, cfg)
            run_dir = os.path.join(opts.runs_dir, f"gen-{sig}")
            check_stored_ar(cfg, run_dir)  # same signature, other science: refused (sweeps/identity.py)
            state = classify(run_dir)[0]
            cfg = _shared_training(cfg, opts.runs_dir, state, where)
            out.setdefault(sig, GenPlanned(sig, run_dir, tok, point["tokenizer_name"], cfg, state))
    return list(out.values())


def cpu_hours(p: GenPlanned) -> float | None:
    """CPU-hours a launch still spends on generator ``p`` at cpu scale (``CPU_RATES``): the steps after its
    last logged one (none where it takes a finished run's weights) and its evaluation over every CFG scale;
    None for a model never timed. The held-out loss (``ar.val_images``) is left out: a few forward passes."""
    if p.state == "finished":
        return 0.0
    rate = CPU_RATES.get(p.cfg.model)
    if rate is None:
        return None
    done = p.cfg.steps if p.cfg.init_from else int(read_status(p.run_dir).get("step", 0))
    train = max(p.cfg.steps - done, 0) * rate[0] * p.cfg.batch / 64
    return (train + p.cfg.samples * (1 + len(ar_sweep(p.cfg))) * rate[1]) / 3600


def tokenizers(gens: list[GenPlanned]) -> list[Planned]:
    """Each tokenizer the generators need, once."""
    return list({p.tok.sig: p.tok for p in gens}.values())


def cost_line(gens: list[GenPlanned], toks: list[Planned]) -> str:
    """``~4.1 CPU-h: 0.3 for 6 tokenizer(s), 3.8 for 6 generator(s) (...)``: what a cpu launch will spend,
    said before it starts."""
    from analysis.seeds import cfg_cpu_hours

    train = [t for t in toks if t.state != "finished"]
    tok_h = sum(cfg_cpu_hours(t.cfg) for t in train)
    gen_h = [cpu_hours(p) for p in gens]
    untimed = sorted({f"GPT-{p.cfg.model}" for p, h in zip(gens, gen_h) if h is None})
    total = tok_h + sum(h for h in gen_h if h is not None)
    return (f"~{total:.1f} CPU-h: {tok_h:.1f} for {len(train)} tokenizer(s), {total - tok_h:.1f} for {len(gens)} "
            f"generator(s)" + (f", {', '.join(untimed)} never timed: not counted" if untimed else "")
            + " (rates measured on 2-core AMD EPYC VMs, sweeps/generation.py CPU_RATES)")


def _shared_training(cfg: ARConfig, runs_dir: str, state: str, where: str) -> ARConfig:
    """A generator not yet started takes the weights of a finished run that trained the same ones under
    another evaluation (fvq/generation/shared.py); ``ar.init_from=`` given by hand is checked here, before
    anything is submitted."""
    here = asdict(cfg)
    if cfg.init_from:
        try:
            check_trained(cfg.init_from, here)
        except SharedTrainingError as e:
            raise ConfigError(f"{where}: {e}") from None
        return cfg
    src = find_trained(runs_dir, here) if state == "missing" else ""
    return replace(cfg, init_from=src) if src else cfg


class GenJob(submitit.helpers.Checkpointable):
    """One generator run, tracked: the MLflow run (bound to the run dir, so a requeued job keeps it), the AR
    curves, gFID / precision / recall with the reasons for what is missing, the sample grid. Called in the
    local submitit job or a Slurm job; a requeue (Checkpointable) resumes from ``ckpt.pt``, at most
    ``max_requeues`` times."""

    def __init__(self, p: GenPlanned, uri: str, experiment: str, commit: str, parent: str, max_requeues: int = 3):
        self.run_dir, self.cfg, self.uri, self.experiment = p.run_dir, p.cfg, uri, experiment
        self.max_requeues = max_requeues
        self.name = f"generation {p.tok_name} GPT-{p.cfg.model} cfg={p.cfg.cfg_scale}" + \
            (f" seed={p.cfg.seed}" if p.cfg.seed else "")
        self.tags = {"signature": f"gen-{p.sig}", "tokenizer": p.tok.sig, "commit": commit,
                     "grid.generation": "1", "mlflow.parentRunId": parent}

    def __call__(self) -> dict:
        from fvq.generation.ar import train_ar
        from sweeps.tracking import open_run

        env = submitit.JobEnvironment() if "SUBMITIT_EXECUTOR" in os.environ else None
        if env is not None and env.num_tasks > 1:  # data-parallel generator: torchrun-style variables
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        main = dist.env_rank() == 0
        if main:
            count_start(self.run_dir, self.max_requeues)  # bounded requeues, as a tokenizer job's
            open_run(self.uri, self.experiment, self.run_dir, self.name, self.tags)  # bound to the run dir
        try:
            res = train_ar(self.cfg, self.run_dir)
        except Preempted as e:  # checkpoint written, PREEMPTED: the requeue or the next launch resumes it
            if main:
                record(self.run_dir, status="KILLED")  # as a tokenizer's run; open_run sets it running again
                _send(self.run_dir)
            print(f"[fvq] {e}; waiting to be requeued", flush=True)
            raise
        except Exception as e:
            if main:
                write_status(self.run_dir, "FAILED", reason=one_line(e)[:300])
                record(self.run_dir, status="FAILED")
                _send(self.run_dir)
            raise
        if main:
            _record(self.run_dir, self.cfg, res)
            _send(self.run_dir)
        return res


def _record(run_dir: str, cfg: ARConfig, res: dict) -> None:
    """What the generator's MLflow run is to hold, written into the run dir first (fvq/core/track.py: the run
    dir is the record, MLflow its copy): the config as params, the final metrics as one more row of the curve
    at the last step, the reasons for what is missing and gFID's card as tags, the sample grid, the end."""
    path = os.path.join(run_dir, "metrics.jsonl")
    final = {f"gen/{k}": float(v) for k, v in res["metrics"].items()}
    final.update({f"time/{k}": float(v) for k, v in res.get("time", {}).items()})  # the run's cost, in seconds
    if final and not any(final.keys() & r.keys() for r in read_jsonl(path)):  # a requeue past this point: once
        with open(path, "a") as f:
            f.write(json.dumps({"step": cfg.steps, **final}) + "\n")
    tags = {f"missing.{k}": v[:250] for k, v in res["missing"].items()}
    tags.update(card_tags("gfid_card", res.get("gfid_card", {})))  # what the gFID was measured against
    attempts = environment.read(run_dir)
    tags.update(environment.tags(attempts) if attempts else {})  # which machine and kernels made it
    record(run_dir, params={f"ar.{k}": v for k, v in res["config"].items()}, tags=tags,
           artifact=(os.path.join(run_dir, "samples.png"), ""), status="FINISHED")


def _send(run_dir: str) -> None:
    """MLflow gets exactly what its run lacks of the record (sweeps/tracking.py `sync_run`); a store away
    leaves the run dir pending, sent by the next launch or ``sync=true``, and never fails a trained run."""
    from sweeps.tracking import sync_one

    line = sync_one(run_dir)
    if " not sent" in line:
        print(f"[track] {line}; the run dir keeps it, `sync=true` sends it", flush=True)


def table(plans: list[GenPlanned]) -> str:
    rows = [f"{'signature':<11} {'state':<9} {'tokenizer':<22} {'AR':<6} {'cfg':<5} {'seed':<5} {'step':<15} gfid"]
    for p in plans:
        g = read_json(os.path.join(p.run_dir, "final.json")).get("metrics", {}).get("gfid")
        step = progress(read_status(p.run_dir), p.cfg.steps, live=p.state == "active")
        rows.append(f"{p.sig:<11} {p.state:<9} {p.tok_name + ' ' + p.tok.sig + ' (' + p.tok.state + ')':<22} "
                    f"{p.cfg.model:<6} {p.cfg.cfg_scale:<5} {p.cfg.seed:<5} {step:<15} "
                    f"{'' if g is None else f'{g:.2f}'}")
    rows += [f"gen-{p.sig} takes the weights {os.path.basename(p.cfg.init_from)} trained (the same training, "
             f"another evaluation: fvq/generation/shared.py)" for p in plans if p.cfg.init_from]
    return "\n".join(rows)


def run_generation(opts: Options, overrides: dict[str, Any], ar_args: dict[str, str]) -> int:
    """The tokenizers the generators need (missing ones trained first), then the generators, through the one
    submit path (sweeps/submit.py) under one parent run. Local: in turn; Slurm: generators wait (afterok)."""
    from sweeps.plan import prepare_launch, write_run
    from sweeps.tracking import ensure_experiment

    plans = plan_generation(opts, overrides, ar_args)
    gens = to_submit(plans, opts.retry)
    toks = tokenizers(gens)  # one that is queued or running is waited for, never resubmitted
    if opts.dry or opts.status:
        print(f"grid=generation scale={opts.scale} runs_dir={opts.runs_dir} ({len(plans)} generator runs)")
        print(table(plans))
        left = gens if opts.dry else [p for p in plans if p.state != "finished"]  # status: what is left at all
        if opts.scale == "cpu" and left:
            print(f"{'to submit' if opts.dry else 'left'}: {cost_line(left, tokenizers(left))}")
        return 0
    cost = f"; {cost_line(gens, toks)}" if opts.scale == "cpu" and gens else ""
    from sweeps.tracking import sync_ended

    sync_ended(plans)  # generators that ended with records their MLflow run lacks: sent before anything else
    launch = prepare_launch(opts)
    ensure_experiment(opts.tracking_uri, opts.experiment)
    print(f"grid=generation scale={opts.scale}: {plan_line(plans, opts.retry, 'generator runs')}{cost}", flush=True)
    for t in toks:
        t.grids = ["generation"]

    def tok_write(t, parent):
        write_run(t, opts.scale, launch, parent)

    with Launching(opts, launch, f"grid=generation scale={opts.scale}",
                   {"commit": launch.label, "grids": "generation", "launcher": opts.launcher}) as launching:
        tok_out = launching.submit(Batch(toks, write=tok_write), show=Live().show)
        if opts.launcher == "slurm":
            def after(p):
                if p.tok.sig in tok_out:
                    return tok_out[p.tok.sig]
                job = read_json(os.path.join(p.tok.run_dir, "job.json"))
                return job.get("job_id", "") if p.tok.state == "active" and job.get("launcher") == "slurm" else ""
        else:
            after, ready = no_dependency, []
            for p in gens:  # a generator needs its tokenizer finished: failed here, or still trained elsewhere
                state, detail = classify(p.tok.run_dir)
                if state == "finished":
                    ready.append(p)
                else:
                    print(f"[fvq] generator {p.sig} not started: its tokenizer {p.tok.sig} is {state} ({detail})",
                          flush=True)
            gens = ready
        gen_out = launching.submit(Batch(gens, job=lambda p, parent: GenJob(p, opts.tracking_uri, opts.experiment,
                                                                           launch.label, parent,
                                                                           launching.max_requeues),
                                         after=after), show=Live().show)
    if opts.launcher == "slurm":
        print("\n".join([f"submitted {len(tok_out)} tokenizer job(s), {len(gen_out)} generator job(s) from commit "
                          f"{launch.label[:10]}", *(f"generator {s} job {j}" for s, j in gen_out.items()),
                          f"watch: python sweeps/run.py grid=generation scale={opts.scale} status=true"]))
        return 0
    for p in plans:
        p.state, p.tok.state = classify(p.run_dir)[0], classify(p.tok.run_dir)[0]
    print(table(plans))
    if launching.results:
        print("done: " + "; ".join(f"{what} {summary(out)}" for what, out in (("tokenizers", tok_out),
                                                                           ("generators", gen_out)) if out), flush=True)
    return exit_code(launching.results)
