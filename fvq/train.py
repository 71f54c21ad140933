"""Train and evaluate one FVQ tokenizer: ``train(cfg, run_dir, sink)`` is what every sweep job runs.

Read top to bottom: `train_step` (one optimisation step), then `train`: set-up (run dir, data, model,
losses, optimisers), resume, the loop, the final evaluation. The recipe is the paper's (Appendix F-G,
Table 6): Adam(0.9, 0.95), lr = base_lr x batch / 128, learning annealing (fvq/core/schedule.py), loss = L2 +
commitment (beta 0.25) + LPIPS + PatchGAN hinge (eq. 35).

The run dir (fvq/core/rundir.py) holds ``config.json``, ``status.json`` (RUNNING / FINISHED / PRUNED / PREEMPTED /
FAILED with step and reason: a failure during set-up is recorded too), ``ckpt.pt`` (atomic; every
``log.ckpt_every`` steps and on SIGTERM / SIGUSR1), ``metrics.jsonl``, ``final.json`` (evaluation),
``recon.png``, ``codebook.pt`` (the projected codebook: the only thing inference needs, section 3.2) and
``environment.json`` (the software and kernels of each start, also the run's ``env.*`` tags).

Resuming from ``ckpt.pt`` reproduces the uninterrupted run bit for bit on CPU: data order and
augmentation are pure functions of (seed, epoch, index) (fvq/core/loader.py) and every RNG state is in the
checkpoint.

Data-parallel (fvq/core/dist.py): started with several tasks (torchrun, or Slurm through sweeps/job.py), each
rank trains on its slice of every global batch of ``optim.batch`` images and DDP averages the gradients,
so losses, usage and weights are the 1-process run's up to float error. Only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from typing import Any, Callable

import torch

from fvq.core import dist, environment
from fvq.build import (Parts, build_datasets, build_eval_lpips, build_extra_datasets, build_parts, evaluate_run,
                       resolve_device)
from fvq.core.checkpoint import (Preempted, load_checkpoint, note_stop_signals, remove_partial, rng_state,
                                 save_checkpoint, set_rng_state)
from fvq.core.config import Config, to_flat_dict
from fvq.core.errors import SetupError, one_line
from fvq.core.loader import train_loader
from fvq.eval.card import card_tags
from fvq.eval.metrics import OfficialUsage, WindowedUsage
from fvq.core.progress import Progress
from fvq.core.rundir import check_new_or_run, prepare_run_dir, read_status, write_json, write_status
from fvq.core.schedule import lr_factor
from fvq.core.track import BufferedTracker, NullTracker, Sink


class RunFailed(RuntimeError):
    """Training stopped for a reason recorded in status.json (e.g. a non-finite loss); one line."""


def _micro(net, last: bool):
    """DDP all-reduces gradients on the last micro-batch only (``no_sync`` before it); else nothing."""
    return contextlib.nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync()


def train_step(p: Parts, x: torch.Tensor, step: int, lr: float) -> tuple[dict[str, torch.Tensor], torch.Tensor, Any]:
    """One optimisation step on this rank's slice ``x`` of the global batch: the generator (eq. 35), then
    the discriminator once it has started. Returns the loss terms averaged over ranks, the gradient norm
    before clipping and the quantizer output (its indices feed the usage curve).

    With ``optim.accum`` = A the slice runs as A equal micro-batches, each loss scaled by 1/A: the summed
    gradients are those of the whole slice (every term is a mean over equal-sized micro-batches)."""
    cuda, accum = x.device.type == "cuda", p.cfg.optim.accum
    for group in p.opt.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)  # optim.projector_lr (fvq/build.py)
    p.model.train()
    p.opt.zero_grad(set_to_none=True)
    chunks, terms, recon, codes = x.chunk(accum), {}, [], []
    for i, xi in enumerate(chunks):
        with _micro(p.net, i == accum - 1):
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cuda):
                x_hat, q = p.net(xi)
                t = p.vqloss.generator_terms(xi, x_hat, q, step)
            (t["total"] / accum if accum > 1 else t["total"]).backward()
        terms = {k: terms.get(k, 0) + v.detach() / accum for k, v in t.items()} if accum > 1 else t
        recon.append(x_hat.detach())
        codes.append(q.indices)
    # Averaged over ranks (one small all-reduce): the values of the global batch, and the same verdict on
    # every rank (one rank raising alone would leave the others waiting in a collective). No optimiser
    # step has been taken yet, so a non-finite loss leaves the weights as they were.
    terms = dist.mean_terms(terms)
    if not torch.isfinite(terms["total"]):
        bad = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
        raise RunFailed(f"non-finite loss at step {step} ({bad})")
    gnorm = torch.nn.utils.clip_grad_norm_(p.model.parameters(), p.cfg.optim.grad_clip or math.inf)
    p.opt.step()
    if p.opt_d is not None and step >= p.cfg.loss.disc_start:
        for group in p.opt_d.param_groups:
            group["lr"] = lr  # the discriminator follows the same schedule
        p.opt_d.zero_grad(set_to_none=True)
        d_terms = {}
        for i, (xi, x_hat) in enumerate(zip(chunks, recon)):
            with _micro(p.disc_net, i == accum - 1):
                with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cuda):
                    d = p.vqloss.discriminator_terms(xi, x_hat, step, disc=p.disc_net)
                (d["disc"] / accum if accum > 1 else d["disc"]).backward()
            d_terms = {k: d_terms.get(k, 0) + v.detach() / accum for k, v in d.items()} if accum > 1 else d
        p.opt_d.step()
        terms = {**terms, **dist.mean_terms(d_terms)}
    return terms, gnorm, (q if accum == 1 else q._replace(indices=torch.cat(codes)))


def train(cfg: Config, run_dir: str, sink: Sink | None = None, log=print,
          on_eval: Callable[[int, dict[str, float]], bool] | None = None) -> dict[str, Any]:
    """Train, evaluate, return ``final.json``'s content. ``on_eval(step, metrics)`` is called after each
    intermediate evaluation (``eval.every``); returning True stops the run as PRUNED (Optuna pruning).
    Data-parallel when the environment names several ranks (fvq/core/dist.py); ``sink`` is used by rank 0 only."""
    with dist.joined(resolve_device(cfg)) as device:
        return _train(cfg, run_dir, device, sink, log, on_eval)


def _train(cfg: Config, run_dir: str, device: torch.device, sink: Sink | None, log,
           on_eval: Callable[[int, dict[str, float]], bool] | None) -> dict[str, Any]:
    main, rank, world = dist.is_main(), dist.rank(), dist.world()
    log = log if main else (lambda *a, **k: None)  # rank 0 speaks for the run
    dist.on_main(prepare_run_dir, cfg, run_dir)
    dist.on_main(remove_partial, run_dir)  # checkpoint writes a kill or a full disk cut short
    tracker = BufferedTracker(sink, run_dir, log=log) if main else NullTracker()  # rank 0 records the run
    status, step_reached = "FAILED", read_status(run_dir).get("step")
    # SIGTERM (Slurm preemption / scancel) and SIGUSR1 (time limit warning): finish the step, checkpoint.
    stop_signal: list[int] = []
    restore_handlers = note_stop_signals(stop_signal)
    progress = None
    try:
        # ---- set-up: data, model, losses, optimisers (a failure here is recorded like any other) ------
        p, train_ds, val_ds, eval_lpips = _set_up(cfg, device, world)
        total = cfg.optim.steps
        window = WindowedUsage(cfg.quant.codebook_size, cfg.log.usage_window)
        official = OfficialUsage(cfg.quant.codebook_size)  # the official training usage, logged beside ours

        # ---- resume -----------------------------------------------------------------------------------
        start = _resume(cfg, run_dir, p, window, official, tracker, log)
        if main:  # which kernels made this attempt's numbers (fvq/core/environment.py), per start
            tracker.set_tags(environment.tags(environment.record(run_dir, environment.gather(str(device)), start)))

        # ---- the loop ---------------------------------------------------------------------------------
        _set_status(run_dir, "RUNNING", step=start, pid=os.getpid())
        progress = Progress(cfg.log.progress, start, total, log, enabled=main)
        loader = train_loader(train_ds, cfg.optim.batch, cfg.seed, start, total, rank=rank, world=world,
                              workers=cfg.data.workers, pin_memory=device.type == "cuda")
        track_time, t_last = 0.0, time.perf_counter()
        for step, x in enumerate(loader, start=start):
            lr = cfg.lr * lr_factor(step, total, cfg.sched)
            terms, gnorm, q = train_step(p, x.to(device, non_blocking=True), step, lr)
            window.update(q.indices, step)
            official.update(q.indices)
            done = step_reached = step + 1

            if done % cfg.log.every == 0 or done == total:
                window.all_reduce()  # the curve counts every rank's codes (a union), not rank 0's
                official.all_reduce()  # and so does the official estimator (1-process order; its docstring)
                t0 = now = time.perf_counter()
                metrics = {f"train/{k}": float(v.detach()) for k, v in terms.items()}
                metrics.update({"train/lr": lr, "train/grad_norm": float(gnorm), "train/usage": window.usage(step),
                                "train/usage_official": official.usage(),
                                "train/img_per_s": cfg.log.every * cfg.optim.batch / max(now - t_last, 1e-9),
                                "time/track_share": track_time / max(now - t_last, 1e-9)})
                tracker.log_metrics(metrics, done)
                progress.update(done, metrics)
                _set_status(run_dir, "RUNNING", step=done, pid=os.getpid())
                track_time, t_last = time.perf_counter() - t0, time.perf_counter()
            stopping = dist.any_true(bool(stop_signal))  # a signal may reach the ranks steps apart
            if done % cfg.log.ckpt_every == 0 or stopping:
                _checkpoint(run_dir, cfg, p, window, official, done)
            if stopping:
                dist.barrier()  # no rank exits (so no launcher kills rank 0) before the checkpoint is written
                raise Preempted(f"signal {(stop_signal or ['on another rank'])[0]} at step {done}: checkpoint written")
            if cfg.eval.every and done % cfg.eval.every == 0 and done < total:
                interim = _evaluate(cfg, p, eval_lpips, val_ds, device, run_dir, tracker, done, final=False)
                if dist.broadcast_object(main and on_eval is not None and bool(on_eval(done, interim))):
                    out = {"step": done, "metrics": interim, "missing": {}, "pruned": True}
                    if main:
                        write_json(os.path.join(run_dir, "final.json"), out)
                    status = "KILLED"  # MLflow has no PRUNED status: KILLED with the tag state=PRUNED
                    _finish(run_dir, tracker, "PRUNED", done)
                    return out

        # ---- the final evaluation ---------------------------------------------------------------------
        progress.close()
        if start < total:
            _checkpoint(run_dir, cfg, p, window, official, total)
        result = _evaluate(cfg, p, eval_lpips, val_ds, device, run_dir, tracker, total, final=True)
        status = "FINISHED"
        _finish(run_dir, tracker, "FINISHED", total)
        return result
    except Preempted:
        status = "KILLED"
        _set_status(run_dir, "PREEMPTED", step=step_reached)
        raise
    except Exception as e:
        reason = one_line(e)  # a full or read-only disk is named as such (fvq/core/errors.py)
        try:
            _set_status(run_dir, "FAILED", reason=reason, step=step_reached)
            tracker.set_tags({"failure": reason[:250]})
        except OSError as w:  # the run dir itself went read-only or full: MLflow alone can take the failure
            if sink is not None and main:  # (the tracker records to the run dir before it sends)
                with contextlib.suppress(Exception):
                    sink.set_tags({"failure": reason[:250]})
                    sink.finish("FAILED")
            also = "" if one_line(w) == reason else f"; {one_line(w)}"
            raise RunFailed(f"{reason}{also}; status.json could not record the failure") from None
        raise
    finally:
        if progress is not None:
            progress.close()
        try:
            tracker.close(status)
        except OSError:  # a run dir gone read-only or full: the failure on its way already says so
            if status == "FINISHED":
                raise
        restore_handlers()


def _set_up(cfg: Config, device: torch.device, world: int) -> tuple[Parts, Any, Any, tuple]:
    """(parts, train set, val set, eval LPIPS); the layout checks first, then everything a bad input can stop
    (a missing eval.extra set stops the run now, not after training)."""
    if cfg.optim.batch % world:
        raise SetupError(f"optim.batch={cfg.optim.batch} (the global batch) is not divisible by "
                         f"{world} processes")
    if (cfg.optim.batch // world) % cfg.optim.accum:
        raise SetupError(f"optim.accum={cfg.optim.accum} does not divide the {cfg.optim.batch // world} images "
                         f"per process of optim.batch={cfg.optim.batch} over {world} processes")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    train_ds, val_ds = build_datasets(cfg)
    p = build_parts(cfg, device)
    eval_lpips = build_eval_lpips(cfg, device, p.lpips)  # (module, "") or (None, why it is missing)
    build_extra_datasets(cfg)
    return p, train_ds, val_ds, eval_lpips


def _resume(cfg: Config, run_dir: str, p: Parts, window: WindowedUsage, official: OfficialUsage, tracker, log) -> int:
    """The step training starts at: ``ckpt.pt``'s, with the weights, optimisers, usage window and every RNG
    state restored (so the run goes on bit for bit on CPU), or 0 for a new run, whose params are logged."""
    start, ckpt_path = 0, os.path.join(run_dir, "ckpt.pt")
    if os.path.exists(ckpt_path):
        state = load_checkpoint(ckpt_path, expect_config=to_flat_dict(cfg))
        p.model.load_state_dict(state["model"])
        p.opt.load_state_dict(state["opt"])
        if p.disc is not None:
            p.disc.load_state_dict(state["disc"])
            p.opt_d.load_state_dict(state["opt_d"])
        window.load_state_dict(state["window"])
        if "usage_official" in state:  # absent from checkpoints written before it was logged
            official.load_state_dict(state["usage_official"])
        set_rng_state(state["rng"])
        start = int(state["step"])
        log(f"[fvq] resumed {run_dir} at step {start}/{cfg.optim.steps}", flush=True)
    else:
        if cfg.model.init:  # released or earlier weights before step 0; a resumed run has them in ckpt.pt
            from fvq.vq.checkpoint_io import load_weights
            log(f"[fvq] model.init: {load_weights(p.model, cfg.model.init)} weights from {cfg.model.init}", flush=True)
        n_params = sum(t.numel() for t in p.model.parameters())
        tracker.log_params({**to_flat_dict(cfg), "derived.lr": cfg.lr, "derived.params": n_params})
    tracker.resume(start)  # metrics.jsonl: no torn line, no row after the step training restarts at
    return start


def _checkpoint(run_dir: str, cfg: Config, p: Parts, window: WindowedUsage, official: OfficialUsage,
                step: int) -> None:
    window.all_reduce()  # every rank calls _checkpoint at the same steps; rank 0 writes
    official.all_reduce()
    if dist.is_main():
        save_checkpoint(os.path.join(run_dir, "ckpt.pt"), {
            "step": step, "model": p.model.state_dict(), "opt": p.opt.state_dict(),
            "disc": p.disc.state_dict() if p.disc is not None else None,
            "opt_d": p.opt_d.state_dict() if p.opt_d is not None else None,
            "window": window.state_dict(), "usage_official": official.state_dict(), "rng": rng_state(),
            "config": to_flat_dict(cfg)})


def _set_status(run_dir: str, state: str, **fields: Any) -> None:
    if dist.is_main():  # rank 0 writes the run dir
        write_status(run_dir, state, **fields)


def _finish(run_dir: str, tracker, state: str, step: int) -> None:
    """End a run that finished (or was pruned, MLflow's KILLED with the tag state=PRUNED). The tracker is
    closed first: a run dir that says it ended has its MLflow run ended too (observers, such as
    `run.py status=` and the tests, poll status.json and then read MLflow)."""
    if state == "PRUNED":
        tracker.set_tags({"state": "PRUNED"})
    tracker.close("KILLED" if state == "PRUNED" else state)
    _set_status(run_dir, state, step=step)


@torch.no_grad()
def _evaluate(cfg: Config, p: Parts, eval_lpips: tuple, val_ds, device, run_dir: str, tracker, step: int,
              final: bool) -> dict[str, Any]:
    """Usage over the whole val set, PSNR, SSIM, LPIPS, rFID (the final one also on each eval.extra set);
    missing metrics are recorded with reasons. Every rank evaluates its shard (fvq/eval/evaluate.py reduces);
    rank 0 writes the artifacts."""
    p.model.eval()
    res = evaluate_run(cfg, p.model, val_ds, device, *eval_lpips, extra=final)
    missing = dict(res.missing)
    tracker.log_metrics({f"eval/{k}": v for k, v in res.metrics.items()}, step)
    if not final:
        return dict(res.metrics)
    out = {"step": step, "metrics": res.metrics, "missing": missing, "fid_card": res.card}
    if not dist.is_main():
        return out
    tracker.set_tags({f"missing.{k}": v[:250] for k, v in missing.items()})
    tracker.set_tags(card_tags("fid_card", res.card))  # what the rFID was measured against (its metric card)
    _save_artifacts(p.model, val_ds, device, run_dir)
    write_json(os.path.join(run_dir, "final.json"), out)
    for name in ("config.json", "final.json", "recon.png", "codebook.pt"):
        tracker.log_artifact(os.path.join(run_dir, name))
    return out


def _save_artifacts(model, val_ds, device, run_dir: str, n: int = 8) -> None:
    """recon.png (inputs over reconstructions) and codebook.pt (the baked, projector-free codebook)."""
    import torchvision

    x = torch.stack([val_ds[i] for i in range(min(n, len(val_ds)))]).to(device)
    x_hat, _ = model(x)
    grid = torch.cat([x, x_hat.float().clamp(-1, 1)]).add(1).div(2)
    torchvision.utils.save_image(grid, os.path.join(run_dir, "recon.png"), nrow=len(x), padding=1)
    plain = model.quantizer.export()
    torch.save({"codebook": plain.codebook().detach().cpu()}, os.path.join(run_dir, "codebook.pt"))


def main(argv: list[str] | None = None) -> int:
    """``python -m fvq.train out=runs/demo [key=value ...]``: one run, no remote tracking (run dir only).

    Sweeps, MLflow and Slurm live in ``sweeps/run.py``; this entry point is for debugging a single config.
    Exit status: 0 finished, 2 bad input or a failed run (one line on stderr), 3 preempted (checkpoint written).
    """
    from fvq.core.config import apply_overrides, base_config

    args = list(sys.argv[1:] if argv is None else argv)
    out = next((a.split("=", 1)[1] for a in args if a.startswith("out=")), "runs/debug")
    scale = next((a.split("=", 1)[1] for a in args if a.startswith("scale=")), "cpu")
    rest = [a for a in args if not a.startswith(("out=", "scale="))]
    try:
        check_new_or_run(out)  # a debugging run never writes into a folder that is not one
        result = train(apply_overrides(base_config(scale), rest), out)
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return 3
    except (SetupError, RunFailed, ValueError, OSError) as e:  # ValueError: a constructor refusing a value
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    if dist.env_rank() == 0:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
