"""Train and evaluate one FVQ tokenizer: ``train(cfg, run_dir, sink)`` is what every sweep job runs.

Read top to bottom: set-up (config, data, model, losses, optimisers), resume, the loop, the final
evaluation. The recipe is the paper's (Appendix F-G, Table 6): Adam(0.9, 0.95), lr = base_lr x batch / 128,
learning annealing (fvq/schedule.py), loss = L2 + commitment (beta 0.25) + LPIPS + PatchGAN hinge (eq. 35).

The run dir holds: ``config.json`` (full resolved config), ``status.json`` (RUNNING / FINISHED / FAILED
with step and reason), ``ckpt.pt`` (atomic; every ``log.ckpt_every`` steps and on SIGTERM / SIGUSR1),
``metrics.jsonl`` (every logged metric), ``final.json`` (evaluation), ``recon.png``, ``codebook.pt``
(the projected codebook: the only thing inference needs, section 3.2).

Resuming from ``ckpt.pt`` reproduces the uninterrupted run bit for bit on CPU: data order and
augmentation are pure functions of (seed, epoch, index) and every RNG state is in the checkpoint.

Data-parallel (fvq/dist.py): started with several tasks (torchrun, or Slurm through sweeps/job.py), each
rank trains on its slice of every global batch of ``optim.batch`` images and DDP averages the gradients,
so losses, usage and weights are the 1-process run's up to float error. Only rank 0 writes files.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from typing import Any, Callable

import torch

from fvq import dist
from fvq.build import build_datasets, build_loss, build_model, eval_kwargs, resolve_device
from fvq.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fvq.config import Config, science_mismatch, to_flat_dict, to_json
from fvq.schedule import lr_factor
from fvq.track import BufferedTracker, NullTracker, Sink


class RunFailed(RuntimeError):
    """The run stopped for a reason recorded in status.json; the message is one line."""


class Preempted(RuntimeError):
    """SIGTERM / SIGUSR1 arrived: a checkpoint was written, the job can be requeued."""


def write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_status(run_dir: str) -> dict[str, Any]:
    try:
        with open(os.path.join(run_dir, "status.json")) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def prepare_run_dir(cfg: Config, run_dir: str) -> None:
    """Create the run dir and write config.json; refuse a run dir that holds another config."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, ".write-test")
        open(probe, "w").close()
        os.unlink(probe)
    except OSError as e:
        raise RunFailed(f"run dir {run_dir} is not writable ({e.strerror})") from None
    path = os.path.join(run_dir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        flat = to_flat_dict(cfg)
        bad = science_mismatch(stored, flat)
        if bad:
            raise RunFailed(f"run dir {run_dir} holds a run with another config ({bad[0]}={stored[bad[0]]!r} "
                            f"there, {flat[bad[0]]!r} now); use a fresh run dir")
    else:
        with open(path + ".tmp", "w") as f:
            f.write(to_json(cfg))
        os.replace(path + ".tmp", path)


class _Epoched(torch.utils.data.Dataset):
    """Dataset adaptor whose items are addressed by (epoch, index), so workers need no shared state."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key):
        epoch, i = key
        self.ds.set_epoch(epoch)
        return self.ds[i]


def batch_plan(n: int, batch: int, seed: int, start: int, total: int, rank: int = 0, world: int = 1):
    """Index lists for steps start..total-1: each epoch a seeded permutation, last partial batch dropped.

    Data-parallel: ``batch`` is the global batch and rank r gets the r-th contiguous slice of each one, so
    the ranks' micro-batches of a step together are exactly the 1-process batch."""
    from fvq.data import epoch_permutation

    per_epoch = n // batch
    if per_epoch == 0:
        raise RunFailed(f"dataset has {n} training images, fewer than one batch of {batch}")
    perm_epoch, perm = -1, None
    for step in range(start, total):
        epoch, k = divmod(step, per_epoch)
        if epoch != perm_epoch:
            perm_epoch, perm = epoch, epoch_permutation(n, seed, epoch)
        per = batch // world
        lo = k * batch + rank * per
        yield [(epoch, int(i)) for i in perm[lo:lo + per]]


def train(cfg: Config, run_dir: str, sink: Sink | None = None, log=print,
          on_eval: Callable[[int, dict[str, float]], bool] | None = None) -> dict[str, Any]:
    """Train, evaluate, return ``final.json``'s content. ``on_eval(step, metrics)`` is called after each
    intermediate evaluation (``eval.every``); returning True stops the run as PRUNED (Optuna pruning).
    Data-parallel when the environment names several ranks (fvq/dist.py); ``sink`` is used by rank 0 only."""
    device, own_group = dist.init_from_env(resolve_device(cfg))
    try:
        return _train(cfg, run_dir, device, sink, log, on_eval)
    finally:
        if own_group:
            dist.destroy()


def _train(cfg: Config, run_dir: str, device: torch.device, sink: Sink | None, log,
           on_eval: Callable[[int, dict[str, float]], bool] | None) -> dict[str, Any]:
    main, rank, world = dist.is_main(), dist.rank(), dist.world()
    log = log if main else (lambda *a, **k: None)  # rank 0 speaks for the run
    dist.on_main(prepare_run_dir, cfg, run_dir)
    if cfg.optim.batch % world:
        raise RunFailed(f"optim.batch={cfg.optim.batch} (the global batch) is not divisible by {world} processes")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)

    def set_status(state: dict[str, Any]) -> None:
        if main:
            write_json(os.path.join(run_dir, "status.json"), state)

    # ---- data, model, losses, optimisers --------------------------------------------------------------
    train_ds, val_ds = build_datasets(cfg)
    model = build_model(cfg).to(device)
    vqloss, lpips_module, disc = build_loss(cfg, device)
    # Training goes through the DDP wrappers (gradients all-reduced: encoder, decoder, raw codebook and the
    # VQBridge projector are shared parameters, so the projected codebook stays identical on every rank).
    # The generator's adversarial term uses the bare discriminator: its gradients there are discarded.
    ddp_model = dist.wrap(model, device)
    ddp_disc = dist.wrap(disc, device, sync_bn=True) if disc is not None else None
    betas = (cfg.optim.beta1, cfg.optim.beta2)
    # One optimiser for encoder + decoder + raw codebook + projector: the projector is trained jointly
    # with the codebook (section 3.1, f(C) "with joint optimization over c").
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.optim.weight_decay)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=betas) if disc is not None else None
    total = cfg.optim.steps
    from fvq.metrics import WindowedUsage

    window = WindowedUsage(cfg.quant.codebook_size, cfg.log.usage_window)

    # ---- resume ---------------------------------------------------------------------------------------
    ckpt_path = os.path.join(run_dir, "ckpt.pt")
    start = 0
    resumed = os.path.exists(ckpt_path)
    if resumed:
        state = load_checkpoint(ckpt_path, expect_config=to_flat_dict(cfg))
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if disc is not None:
            disc.load_state_dict(state["disc"])
            opt_d.load_state_dict(state["opt_d"])
        window.load_state_dict(state["window"])
        set_rng_state(state["rng"])
        start = int(state["step"])
        log(f"[fvq] resumed {run_dir} at step {start}/{total}", flush=True)

    def checkpoint(step: int) -> None:
        window.all_reduce()  # every rank calls checkpoint() at the same steps; rank 0 writes
        if not main:
            return
        save_checkpoint(ckpt_path, {
            "step": step, "model": model.state_dict(), "opt": opt.state_dict(),
            "disc": disc.state_dict() if disc is not None else None,
            "opt_d": opt_d.state_dict() if opt_d is not None else None,
            "window": window.state_dict(), "rng": rng_state(), "config": to_flat_dict(cfg)})

    tracker = BufferedTracker(sink, run_dir, log=log) if main else NullTracker()  # rank 0 records the run
    if not resumed:
        n_params = sum(p.numel() for p in model.parameters())
        tracker.log_params({**to_flat_dict(cfg), "derived.lr": cfg.lr, "derived.params": n_params})
    set_status({"state": "RUNNING", "step": start, "pid": os.getpid()})

    # SIGTERM (Slurm preemption / scancel) and SIGUSR1 (time limit warning): finish the step, checkpoint.
    stop_signal: list[int] = []
    old_handlers = {s: signal.signal(s, lambda n, f: stop_signal.append(n)) for s in (signal.SIGTERM, signal.SIGUSR1)}
    progress = _Progress(cfg, start, total, log, enabled=main)
    track_time = 0.0
    t_last = time.perf_counter()
    status = "FAILED"
    try:
        loader = torch.utils.data.DataLoader(
            _Epoched(train_ds), batch_sampler=batch_plan(len(train_ds), cfg.optim.batch, cfg.seed, start, total,
                                                         rank, world),
            num_workers=cfg.data.workers, pin_memory=device.type == "cuda")
        for step, x in enumerate(loader, start=start):
            lr = cfg.lr * lr_factor(step, total, cfg.sched)
            for group in opt.param_groups:
                group["lr"] = lr
            model.train()
            x = x.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                x_hat, q = ddp_model(x)
                terms = vqloss.generator_terms(x, x_hat, q, step)
            loss = terms["total"]
            # Averaged over ranks (one small all-reduce): the values of the global batch, and the same
            # verdict on every rank (one rank raising alone would leave the others waiting in a collective).
            terms = dist.mean_terms(terms)
            if not torch.isfinite(terms["total"]):
                bad = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
                raise RunFailed(f"non-finite loss at step {step} ({bad})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or math.inf)
            opt.step()
            if opt_d is not None and step >= cfg.loss.disc_start:
                for group in opt_d.param_groups:
                    group["lr"] = lr  # the discriminator follows the same schedule
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    d_terms = vqloss.discriminator_terms(x, x_hat.detach(), step, disc=ddp_disc)
                opt_d.zero_grad(set_to_none=True)
                d_terms["disc"].backward()
                opt_d.step()
                terms = {**terms, **dist.mean_terms(d_terms)}
            window.update(q.indices, step)
            done = step + 1

            if done % cfg.log.every == 0 or done == total:
                window.all_reduce()  # the curve counts every rank's codes (a union), not rank 0's
                now = time.perf_counter()
                t0 = time.perf_counter()
                metrics = {f"train/{k}": float(v.detach()) for k, v in terms.items()}
                metrics.update({"train/lr": lr, "train/grad_norm": float(gnorm),
                                "train/usage": window.usage(step), "train/img_per_s":
                                cfg.log.every * cfg.optim.batch / max(now - t_last, 1e-9)})
                metrics["time/track_share"] = track_time / max(now - t_last, 1e-9)
                tracker.log_metrics(metrics, done)
                progress.update(done, metrics)
                set_status({"state": "RUNNING", "step": done, "pid": os.getpid()})
                track_time = time.perf_counter() - t0
                t_last = time.perf_counter()
            stopping = dist.any_true(bool(stop_signal))  # a signal may reach the ranks steps apart
            if done % cfg.log.ckpt_every == 0 or stopping:
                checkpoint(done)
            if stopping:
                dist.barrier()  # no rank exits (so no launcher kills rank 0) before the checkpoint is written
                raise Preempted(f"signal {(stop_signal or ['on another rank'])[0]} at step {done}: checkpoint written")
            if cfg.eval.every and done % cfg.eval.every == 0 and done < total:
                interim = _evaluate(cfg, model, val_ds, device, lpips_module, run_dir, tracker, done, final=False)
                if dist.broadcast_object(main and on_eval is not None and bool(on_eval(done, interim))):
                    status = "KILLED"
                    out = {"step": done, "metrics": interim, "missing": {}, "pruned": True}
                    if main:
                        write_json(os.path.join(run_dir, "final.json"), out)
                    tracker.close(status)
                    set_status({"state": "FINISHED", "step": done, "pruned": True})
                    return out
        progress.close()
        if start < total:
            checkpoint(total)
        result = _evaluate(cfg, model, val_ds, device, lpips_module, run_dir, tracker, total, final=True)
        status = "FINISHED"
        # Close the tracker first: a run dir that says FINISHED has its MLflow run ended too (observers,
        # such as `run.py status=` and the tests, poll status.json and then read MLflow).
        tracker.close(status)
        set_status({"state": "FINISHED", "step": total})
        return result
    except Preempted:
        status = "KILLED"
        set_status({"state": "PREEMPTED", "step": read_status(run_dir).get("step")})
        raise
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        set_status({"state": "FAILED", "reason": reason, "step": read_status(run_dir).get("step")})
        tracker.set_tags({"failure": reason[:250]})
        raise
    finally:
        progress.close()
        tracker.close(status)
        for s, h in old_handlers.items():
            signal.signal(s, h)


@torch.no_grad()
def _evaluate(cfg, model, val_ds, device, lpips_module, run_dir, tracker, step, final: bool) -> dict[str, Any]:
    """Usage over the whole val set, PSNR, SSIM, LPIPS, rFID; missing metrics are recorded with reasons.
    Every rank evaluates its shard (fvq/evaluate.py reduces); rank 0 writes the artifacts."""
    from fvq.evaluate import evaluate

    model.eval()
    res = evaluate(model, val_ds, device=str(device), fid=cfg.eval.fid,
                   lpips_module=lpips_module if cfg.eval.lpips else None, **eval_kwargs(cfg))
    missing = dict(res.missing)
    if not cfg.eval.lpips:
        missing["lpips"] = "disabled (eval.lpips=false)"
    if not cfg.eval.fid:
        missing["rfid"] = "disabled (eval.fid=false)"
    tracker.log_metrics({f"eval/{k}": v for k, v in res.metrics.items()}, step)
    if not final:
        return dict(res.metrics)
    out = {"step": step, "metrics": res.metrics, "missing": missing}
    if not dist.is_main():
        return out
    tracker.set_tags({f"missing.{k}": v[:250] for k, v in missing.items()})
    _save_artifacts(model, val_ds, device, run_dir)
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


class _Progress:
    """A bar on interactive terminals; flushed log lines under Slurm (or when not a tty)."""

    def __init__(self, cfg: Config, start: int, total: int, log, enabled: bool = True):
        mode = cfg.log.progress if enabled else "off"
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() and "SLURM_JOB_ID" not in os.environ else "lines"
        self.mode, self.total, self.log, self.bar = mode, total, log, None
        self.last_line = time.monotonic()
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True)

    def update(self, step: int, m: dict[str, float]) -> None:
        short = {"loss": m.get("train/total", float("nan")), "usage": m["train/usage"], "lr": m["train/lr"],
                 "img/s": m["train/img_per_s"]}
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in short.items()}, refresh=True)
        elif self.mode == "lines" and (time.monotonic() - self.last_line > 10 or step == self.total):
            self.last_line = time.monotonic()
            body = " ".join(f"{k}={v:.4g}" for k, v in short.items())
            self.log(f"[fvq] step {step}/{self.total} {body}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def main(argv: list[str] | None = None) -> int:
    """``python -m fvq.train out=runs/demo [key=value ...]``: one run, no remote tracking (run dir only).

    Sweeps, MLflow and Slurm live in ``sweeps/run.py``; this entry point is for debugging a single config.
    """
    from fvq.config import ConfigError, apply_overrides, base_config

    args = list(sys.argv[1:] if argv is None else argv)
    out = next((a.split("=", 1)[1] for a in args if a.startswith("out=")), "runs/debug")
    scale = next((a.split("=", 1)[1] for a in args if a.startswith("scale=")), "cpu")
    rest = [a for a in args if not a.startswith(("out=", "scale="))]
    try:
        cfg = apply_overrides(base_config(scale), rest)
        result = train(cfg, out)
    except (ConfigError, RunFailed, CheckpointError, ValueError, OSError) as e:
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # e.g. LPIPS backbone weights absent: already a one-line message
        if type(e).__name__ not in ("LPIPSWeightsMissing", "FIDWeightsMissing"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return 3
    if dist.env_rank() == 0:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
