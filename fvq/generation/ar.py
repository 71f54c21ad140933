"""Training and evaluating the generator (Tables 2 and 11, Fig. 1 left, Fig. 5 right).

``train_ar(cfg, run_dir)``: the GPT of fvq/generation/gpt.py on a finished tokenizer's token cache
(fvq/generation/tokens.py), then class-conditional samples decoded by that tokenizer and scored against real images.

Recipe (Table 6, generation column; the FVQ authors' ``autoregressive/train/train_c2i_lr.py``): AdamW,
betas (0.9, 0.95), weight decay 0.05 on >= 2-D tensors only, lr = 1e-4 x batch / 256 (lr = base_lr x batch /
base_batch x lr_scale), no warmup, lr held for 5% of the steps then linear decay over 95% to 0.01 x lr
(fvq/core/schedule.py), grad clip 1.0, label dropout 0.1, no EMA, bf16 autocast on GPU; data-parallel through
fvq/core/dist.py. ``paper_recipe(model)`` holds the paper-scale batch and length per model, from the authors'
launch scripts: GPT-L 300 epochs at global batch 2,048 (lr 8e-4), GPT-XL 350 epochs at 1,024 (lr 4e-4), both
on ten-crop + flip codes (``aug``, fvq/generation/tokens.py). A checkpoint (model, optimiser, step, RNG) is
written every ``ckpt_every`` steps, on the last, and at the step a SIGTERM / SIGUSR1 arrives in (then the run
is PREEMPTED, fvq/core/checkpoint.py); a rerun resumes from it, bit-identical on CPU. The checkpoint also
carries the wall and CPU seconds the run's training has taken over its attempts; ``final.json`` ``time`` adds
the evaluation's: what a generator costs, whatever else shared the machine.

Sampling: LlamaGen's sampler (fvq/generation/gpt.py ``generate``) with ``cfg_scale``, ``cfg_interval`` (-1:
guidance on every code, LlamaGen's default), temperature, top-k, top-p.

Evaluation (``gfid``, ``precision``, ``recall``, ``is``): ``samples`` generated images (classes cycled
0,1,2,...) against the first ``samples`` images of the tokenizer's val set through the same offline
Inception as rFID (fvq/eval/inception.py). ``is`` (torch-fidelity's ``isc_features_to_metric``: 10 splits,
its fixed shuffle) needs Inception logits: torch-fidelity's ``inception-v3-compat`` has them (a second
pass over the samples, ``logits_unbiased``), the offline TorchScript pool3 extractor does not, and then
``is`` is recorded missing with that reason. Precision / recall (k = 3, torch-fidelity's
``prc_features_to_metric``) run on the same pool3 features rather than torch-fidelity's VGG16 (no VGG16
weights offline); a deviation, recorded in ``final.json``. ``noise_gfid``: the FID between two disjoint
halves of 2 x ``samples`` real images, i.e. how far apart two real sets of this size already are.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, fields
from typing import Any

import torch

from fvq.core import dist, environment
from fvq.core.checkpoint import Preempted, load_checkpoint, note_stop_signals, save_checkpoint
from fvq.core.config import SchedCfg
from fvq.core.keyvalue import split, typed
from fvq.core.errors import SetupError, one_line
from fvq.generation.gpt import GPT, check_cfg, generate, spec
from fvq.generation.shared import take_trained
from fvq.core.rundir import write_json, write_status
from fvq.core.schedule import lr_factor
from fvq.core.track import truncate_jsonl
from fvq.generation.tokens import TokenizerError, check_aug, load_tokenizer, token_cache

# Table 6 generation column, and train_c2i_lr.py's ``combined_lr_lambda``: no warmup, constant for the first
# 5% of the steps, then linear to 0.01 at the last step.
AR_SCHED = SchedCfg(kind="anneal", warmup=0.0, constant=0.05, final=0.01)
IMAGENET_TRAIN = 1_281_167  # LlamaGen's code dataset: one entry per ImageNet-1k train image, whatever ``aug``
# (global batch, epochs) of yfChang-cv/FVQ scripts/generation/train_c2i_L_lr.sh and train_c2i_XL_lr.sh, the
# only recipe flags they pass; every other value below is a default of train_c2i_lr.py.
PAPER_RUNS = {"L": (2048, 300), "XL": (1024, 350)}
# Inception Score needs logits; the text is kept as the cpu results recorded it
NO_LOGITS = "the offline TorchScript Inception (pool3 features only) has no logits: no Inception Score"


@dataclass(frozen=True)
class ARConfig:
    tokenizer: str = ""         # run dir of a FINISHED tokenizer run (the harness resolves a grid point to it)
    model: str = "tiny"         # fvq.generation.gpt.PRESETS: tiny | B | L | XL
    vocab: int = 0              # AR vocabulary; 0 = the tokenizer's codebook size (else it must equal it)
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    train_images: int = 4096    # token cache size (train crops at epoch 0)
    batch: int = 64
    base_lr: float = 1e-4       # Table 6: 1e-4 at batch 256
    base_batch: int = 256
    lr_scale: float = 8.0       # cpu: 300 steps cannot afford 2.5e-5 (cf. OptimCfg.lr_scale); paper: 1.0
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    steps: int = 300
    class_dropout: float = 0.1  # LlamaGen: trains the null class CFG needs
    cfg_scale: float = 1.0      # paper: 1.75 (L), 1.65 (XL)
    cfg_interval: int = -1      # LlamaGen: guide codes 0 .. cfg_interval + 1 only; -1 = every code
    temperature: float = 1.0
    top_k: int = 0              # 0 = off
    top_p: float = 1.0
    samples: int = 128          # generated images for gFID (paper: 50,000)
    cfg_sweep: str = ""         # more CFG scales scored with the same generator ("1.5,2"): gfid_cfg1.5, ...
    val_images: int = 0         # > 0: the AR loss on that many val images' tokens at every log step (calibration)
    aug: str = "none"           # token cache: none | ten_crop_flip (LlamaGen's --ten-crop; paper_recipe)
    log_every: int = 50
    ckpt_every: int = 500
    ref_stats: str = ""         # gFID's real side from an .npz of mu (2048,), sigma (2048, 2048) (ADM's reference
    # batches); "" = the first ``samples`` images of the tokenizer's val set
    init_from: str = ""         # run dir of a finished generator that trained these weights under another evaluation:
    # taken instead of trained again (fvq/generation/shared.py)

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch / self.base_batch * self.lr_scale


def ar_overrides(overrides: list[str] | dict[str, Any], base: ARConfig | None = None) -> ARConfig:
    """Typed ``key=value`` overrides through the one parser (fvq/core/keyvalue.py): an unknown key or a bad
    value is a ConfigError naming it."""
    items = [(k, str(v)) for k, v in overrides.items()] if isinstance(overrides, dict) else split(overrides)
    cfg = typed(ARConfig, items, base=base or ARConfig(), what="AR override")
    check(cfg)
    return cfg


def check(cfg: ARConfig) -> None:
    check_cfg(cfg.cfg_scale, cfg.class_dropout)
    check_aug(cfg.aug)
    if cfg.cfg_interval < -1:
        raise ValueError(f"cfg_interval={cfg.cfg_interval}: -1 (guide every code) or >= 0")
    for c in sweep(cfg):
        check_cfg(c, cfg.class_dropout)
    if cfg.val_images < 0:
        raise ValueError(f"val_images={cfg.val_images}: 0 (no validation loss) or a number of val images")
    spec(cfg.model)


def sweep(cfg: ARConfig) -> list[float]:
    """The extra CFG scales of ``cfg_sweep`` (a bad entry: one line naming it)."""
    try:
        return [float(c) for c in cfg.cfg_sweep.split(",") if c.strip()]
    except ValueError:
        raise ValueError(f"cfg_sweep={cfg.cfg_sweep!r}: expected CFG scales such as 1.5,2") from None


def paper_recipe(model: str) -> dict[str, Any]:
    """ARConfig overrides of the paper-scale generator ``model`` (L or XL), the FVQ authors' runs."""
    if model not in PAPER_RUNS:
        raise ValueError(f"no paper recipe for GPT-{model}: the FVQ scripts train {' and '.join(PAPER_RUNS)}")
    batch, epochs = PAPER_RUNS[model]
    return {
        "batch": batch,
        # epochs x len(loader): drop_last batches of the 1,281,167 entries (at 16 GPUs DistributedSampler's
        # padding leaves that count unchanged): 187,500 steps for L, 437,850 for XL
        "steps": epochs * (IMAGENET_TRAIN // batch), "train_images": IMAGENET_TRAIN,
        # tlr = lr x (global batch // 256) with lr 1e-4; equal to base_lr x batch / base_batch here
        "base_lr": 1e-4, "base_batch": 256, "lr_scale": 1.0,
        "weight_decay": 0.05, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0,
        "class_dropout": 0.1,  # LlamaGen's class_dropout_prob default; the scripts pass no --ema
        "aug": "ten_crop_flip",  # their --code-path: imagenet_code_c2i_flip_ten_crop
    }


def _gpt(cfg: ARConfig, cache: dict) -> GPT:
    if cfg.vocab and cfg.vocab != cache["vocab"]:
        raise TokenizerError(f"AR vocab={cfg.vocab} but the tokenizer {cache['key']} has codebook size "
                             f"{cache['vocab']}")
    return GPT(spec(cfg.model, vocab=cache["vocab"], classes=cache["classes"], tokens=cache["side"] ** 2,
                    class_dropout=cfg.class_dropout))


def _curves_from(run_dir: str, start: int):
    """metrics.jsonl open for appending, each curve row written as it is logged (a kill loses none), after
    a repair for a run that (re)starts at ``start``: a torn last line and the rows after ``start`` (the
    resumed run logs those steps again) are dropped, so every step appears once."""
    path = os.path.join(run_dir, "metrics.jsonl")
    truncate_jsonl(path, start)
    return open(path, "a", buffering=1)


def train_ar(cfg: ARConfig, run_dir: str, log=print, stop_after: int = 0) -> dict[str, Any]:
    """Train (resuming from ``run_dir/ckpt.pt``), evaluate, write ``final.json``; its content.
    ``stop_after`` > 0 stops after that step with a checkpoint and state PREEMPTED, as a preemption would."""
    check(cfg)
    with dist.joined(torch.device("cuda" if cfg.device == "cuda" else "cpu")) as device:
        return _train(cfg, run_dir, device, log, stop_after)


def _train(cfg: ARConfig, run_dir: str, device: torch.device, log, stop_after: int = 0) -> dict[str, Any]:
    main = dist.is_main()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    os.makedirs(run_dir, exist_ok=True)
    flat = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    cache = dist.on_main(lambda: token_cache(cfg.tokenizer, "train", cfg.train_images, aug=cfg.aug))
    cache = cache if main else token_cache(cfg.tokenizer, "train", cfg.train_images, aug=cfg.aug)
    # before the seed: building a token cache draws from the global RNG (its DataLoader), and the held-out
    # loss must not change the weights (fvq/generation/shared.py)
    val = token_cache(cfg.tokenizer, "val", cfg.val_images) if cfg.val_images and main else None
    torch.manual_seed(cfg.seed)
    model = _gpt(cfg, cache).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # no decay on norms (LlamaGen: dim < 2 undecayed)
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    net = dist.wrap(model, device)
    ckpt = os.path.join(run_dir, "ckpt.pt")
    start, spent = 0, {"train_s": 0.0, "train_cpu_s": 0.0}
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # batch order and label dropout: resumable state
    if cfg.init_from and not os.path.exists(ckpt):  # trained already: the run resumes at its last step
        dist.on_main(take_trained, run_dir, flat)
    if os.path.exists(ckpt):
        st = load_checkpoint(ckpt, expect_config=flat)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        torch.set_rng_state(st["rng"])
        start = int(st["step"])
        spent = st.get("time")  # None: a checkpoint from before the time was kept (the total is then unknown)
        log(f"[ar] resumed {run_dir} at step {start}/{cfg.steps}", flush=True)
    if main:
        write_status(run_dir, "RUNNING", step=start, pid=os.getpid())
        environment.record(run_dir, environment.gather(str(device)), start)  # which kernels made this attempt
        record = _curves_from(run_dir, start)
    idx, lab = cache["indices"], cache["labels"]
    per = cfg.batch // dist.world()
    t0 = time.perf_counter()
    w0, c0 = t0, time.process_time()  # this attempt's training: wall and CPU seconds (rank 0's process)

    def time_so_far() -> dict[str, float] | None:  # an attempt that trains no step adds nothing
        return spent if not spent or start >= cfg.steps else {
            "train_s": spent["train_s"] + time.perf_counter() - w0,
            "train_cpu_s": spent["train_cpu_s"] + time.process_time() - c0}
    # SIGTERM / SIGUSR1 (preemption, requeue, time limit): finish the step, checkpoint, stop
    stop_signal: list[int] = []
    restore_handlers = note_stop_signals(stop_signal)
    try:
        net.train()
        for step in range(start, cfg.steps):
            lr = cfg.lr * lr_factor(step, cfg.steps, AR_SCHED)
            for g in opt.param_groups:
                g["lr"] = lr
            pick = torch.randint(len(idx), (cfg.batch,), generator=gen)
            x = idx[pick]
            if x.dim() == 3:  # ten_crop_flip: one of the image's ten code maps, drawn afresh (LlamaGen's dataset)
                x = x[torch.arange(cfg.batch), torch.randint(x.shape[1], (cfg.batch,), generator=gen)]
            mine = slice(dist.rank() * per, (dist.rank() + 1) * per)
            x, y = x[mine].long().to(device), lab[pick[mine]].to(device)
            y = model.drop_labels(y.cpu(), gen).to(device)
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                logits = net(x[:, :-1], y)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip else torch.zeros(())
            opt.step()
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                now = time.perf_counter()
                row = {"step": done, "ar/loss": float(dist.all_reduce(loss.detach()) / dist.world()),
                       "ar/lr": lr, "ar/grad_norm": float(gn),
                       "ar/img_per_s": cfg.log_every * cfg.batch / max(now - t0, 1e-9)}
                if val is not None:
                    row["ar/val_loss"] = val_loss(model, val, device)
                t0 = now
                if main:
                    record.write(json.dumps(row) + "\n")
                    write_status(run_dir, "RUNNING", step=done, pid=os.getpid())  # the launch's progress line reads it
                log(f"[ar] step {done}/{cfg.steps} loss={row['ar/loss']:.4f}", flush=True)
            stop = done == stop_after
            signalled = dist.any_true(bool(stop_signal))  # a signal may reach the ranks steps apart
            if main and (done % cfg.ckpt_every == 0 or done == cfg.steps or stop or signalled):
                save_checkpoint(ckpt, {"step": done, "model": model.state_dict(), "opt": opt.state_dict(),
                                       "gen": gen.get_state(), "rng": torch.get_rng_state(), "config": flat,
                                       "time": time_so_far()})
            if signalled:
                dist.barrier()  # no rank exits (so no launcher kills rank 0) before the checkpoint is written
                if main:
                    record.close()
                    write_status(run_dir, "PREEMPTED", step=done)
                raise Preempted(f"signal {(stop_signal or ['on another rank'])[0]} at step {done}: checkpoint written")
            if stop:
                break
    finally:
        restore_handlers()
    if main:
        record.close()
    if stop_after and stop_after < cfg.steps:
        if main:
            write_status(run_dir, "PREEMPTED", step=stop_after)
        return {"step": stop_after, "config": flat, "tokenizer": cache["key"], "preempted": True}
    result = {"step": cfg.steps, "config": flat, "tokenizer": cache["key"],
              "params": sum(p.numel() for p in model.parameters())}
    if main:  # sampling and gFID take a while on a CPU: the progress line says which phase the run is in
        write_status(run_dir, "RUNNING", step=cfg.steps, pid=os.getpid(), phase="gFID")
        spent_now, e0, ec0 = time_so_far(), time.perf_counter(), time.process_time()
        metrics, missing, card = evaluate_generator(cfg, model, run_dir, device)
        # what the run cost: its own training (0 where it took a finished run's weights) and its evaluation
        result.update(metrics=metrics, missing=missing, gfid_card=card,
                      time={**(spent_now or {}), "eval_s": time.perf_counter() - e0,
                            "eval_cpu_s": time.process_time() - ec0})
        write_json(os.path.join(run_dir, "final.json"), result)
        write_status(run_dir, "FINISHED", step=cfg.steps)
    dist.barrier()
    return result


@torch.no_grad()
def val_loss(model: GPT, val: dict, device, batch: int = 256) -> float:
    """Mean next-code cross-entropy on held-out tokens, classes given, no dropout: how well a size fits the
    tokens (the calibration's measure; training mode resumes after)."""
    model.eval()
    total, n = 0.0, 0
    for s in range(0, len(val["indices"]), batch):
        x, y = val["indices"][s:s + batch].long().to(device), val["labels"][s:s + batch].to(device)
        logits = model(x[:, :-1], y)
        total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.reshape(-1),
                                                         reduction="sum"))
        n += x.numel()
    model.train()
    return total / max(n, 1)


@torch.no_grad()
def sample_images(cfg: ARConfig, model: GPT, tokenizer, n: int, device, batch: int = 64,
                  scale: float | None = None) -> torch.Tensor:
    """n images in [0,1], classes cycled, seeded per batch by ``cfg.seed`` (reproducible), at CFG ``scale``
    (default ``cfg.cfg_scale``): every scale draws from the same random stream."""
    side = int(round(model.spec.tokens ** 0.5))
    out = []
    for s in range(0, n, batch):
        y = torch.arange(s, min(n, s + batch), device=device) % model.spec.classes
        codes = generate(model, y, cfg=cfg.cfg_scale if scale is None else scale, temperature=cfg.temperature, top_k=cfg.top_k,
                         top_p=cfg.top_p, seed=cfg.seed * 100_003 + s, cfg_interval=cfg.cfg_interval)
        out.append(tokenizer.decode_indices(codes.view(-1, side, side)).float().clamp(-1, 1).add(1).div(2).cpu())
    return torch.cat(out)


def inception_logits(kind: str | None, path: str | None, device) -> tuple[Any, str]:
    """(images in [0,1] -> (N, 1008) float64 logits, "") where the weights have logits, else (None, why).
    torch-fidelity's extractor takes uint8 images and resizes them itself, as for its pool3 features."""
    if kind != "torch-fidelity":
        return None, NO_LOGITS
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = FeatureExtractorInceptionV3("inception-v3-compat", ["logits_unbiased"],
                                      feature_extractor_weights_path=path).to(device).eval()

    @torch.no_grad()
    def logits(x01: torch.Tensor) -> torch.Tensor:
        u8 = x01.clamp(0, 1).mul(255).round().to(torch.uint8)
        return torch.cat([net(part.to(device))[0].double().cpu() for part in u8.split(64)])
    return logits, ""


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float | None, str]:
    """torch-fidelity's IS (mean over ``splits`` shuffled chunks), or (None, why) with too few samples."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    if len(logits) < splits:
        return None, f"{len(logits)} samples < {splits} Inception Score splits"
    return float(isc_features_to_metric(logits, splits=splits)["inception_score_mean"]), ""


def evaluate_generator(cfg: ARConfig, model: GPT, run_dir: str, device) -> tuple[dict, dict, dict]:
    """(metrics, missing, card): gFID and the rest (module docstring), each missing one with its reason, and
    gFID's metric card (fvq/eval/card.py ``fid_card``; {} without a gFID): the real set and its hash, the
    extractor, the sample count, crop and resize, the guidance scales and the sampling seed.

    ``cfg.ref_stats``: the real side is that file's mu and sigma; precision, recall and the noise floor need
    real features, so they are missing with that reason. A file that went bad since the plan checked it
    (sweeps/generation.py) leaves gFID missing with the reason, not the trained generator failed."""
    import torchvision
    from torch_fidelity.metric_prc import prc_features_to_metric

    from fvq.eval.card import RefStatsError, crop_text, fid_card, load_ref_stats, reference_name
    from fvq.eval.inception import (find_fid_weights, frechet_distance, frechet_to_stats, get_extractor, load_ref,
                                    ref_key, save_ref)
    from fvq.generation.tokens import labelled_dataset

    tcfg, tok = load_tokenizer(cfg.tokenizer, device)
    fake = sample_images(cfg, model, tok, cfg.samples, device)
    per_class = torch.stack([fake[i] for i in range(min(len(fake), model.spec.classes))])
    torchvision.utils.save_image(per_class, os.path.join(run_dir, "samples.png"), nrow=min(11, len(per_class)),
                                 padding=1)
    metrics: dict[str, float] = {"gen_samples": float(len(fake))}
    missing = {"prc_features": "precision/recall on Inception pool3 features, not torch-fidelity's VGG16 "
                               "(no VGG16 weights offline)"}
    kind, path, reason = find_fid_weights()
    if kind is None:
        missing.update({"gfid": reason, "precision": reason, "recall": reason, "is": f"no logits: {reason}"})
        return metrics, missing, {}
    to_logits, why = inception_logits(kind, path, device)
    score = None
    if to_logits is not None:
        score, why = inception_score(to_logits(fake))
    if score is None:
        missing["is"] = why
    else:
        metrics["is"] = score
    ext = get_extractor(kind, path, str(device))
    n = cfg.samples
    rf = None  # the real features, where the real side has them (precision / recall, noise floor)
    if cfg.ref_stats:
        try:
            stats = load_ref_stats(cfg.ref_stats, f"ref_stats={cfg.ref_stats}")
        except RefStatsError as e:
            missing.update({k: str(e) for k in ("gfid", "precision", "recall", "noise_gfid")})
            return metrics, missing, {}
        ref = {"mu": stats["mu"], "sigma": stats["sigma"]}
        only = f"ref_stats={cfg.ref_stats}: reference statistics only, no real features"
        missing.update({"precision": only, "recall": only, "noise_gfid": only})
        where = dict(reference=f"statistics file {stats['path']}", ref_images=stats["n"],
                     crop="unknown (statistics file)")
    else:
        ds = labelled_dataset(tcfg, "val", None)
        if len(ds) < 2 * n:
            missing["noise_gfid"] = f"val set has {len(ds)} < 2 x {n} images"
        m = min(len(ds), 2 * n)
        # the real side is shared by every generator on the same data: cached like rFID's reference, as
        # features whatever their number (precision / recall and the noise floor need them)
        ref_path = os.path.join(os.path.expanduser("~/.cache/fvq/fid"), f"gen_{ref_key(ds, m, 'fvq', path)}.npz")
        cached = load_ref(ref_path)
        if cached is None or "feats" not in cached:
            real = torch.stack([ds[i] for i in range(m)]).add(1).div(2)
            cached = save_ref(ref_path, torch.cat([ext(real[i:i + 64]) for i in range(0, len(real), 64)]),
                               keep_feats=True)
        rf = cached["feats"]
        if len(rf) >= 2 * n:
            metrics["noise_gfid"] = frechet_distance({"feats": rf[:n]}, rf[n:2 * n])
        ref = {"feats": rf[:n]}
        where = dict(reference=reference_name(ds), ref_images=len(ref["feats"]),
                     crop=crop_text(ds, tcfg.eval.protocol))

    def score(images: torch.Tensor, suffix: str = "") -> None:
        ff = torch.cat([ext(images[i:i + 64]) for i in range(0, len(images), 64)])
        metrics["gfid" + suffix] = frechet_distance(ref, ff) if rf is not None else frechet_to_stats(ref, ff)
        if rf is not None:
            prc = prc_features_to_metric(rf[:n].float(), ff.float(), verbose=False)
            metrics["precision" + suffix], metrics["recall" + suffix] = float(prc["precision"]), float(prc["recall"])

    score(fake)
    for c in sweep(cfg):  # the same generator, seeds and real set at other guidance scales
        score(sample_images(cfg, model, tok, cfg.samples, device, scale=c), f"_cfg{c:g}")
    # sampling seed: each batch of every scale draws from ``seed x 100003 + its first index`` (sample_images)
    card = fid_card("gfid", **where, ref=ref, kind=kind, path=path, images=len(fake), cfg_scale=cfg.cfg_scale,
                    cfg_sweep=cfg.cfg_sweep, seed=cfg.seed)
    return metrics, missing, card


def main(argv: list[str] | None = None) -> int:
    """``python -m fvq.generation.ar out=runs/ar-demo tokenizer=runs/<sig> [key=value ...]``: one generator run.
    Exit status as ``fvq.train``'s: 0 finished, 2 bad input (one line), 3 preempted (checkpoint written)."""
    args = list(sys.argv[1:] if argv is None else argv)
    out = next((a.split("=", 1)[1] for a in args if a.startswith("out=")), "runs/ar-debug")
    try:
        cfg = ar_overrides([a for a in args if not a.startswith("out=")])
        result = train_ar(cfg, out)
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return 3
    except (SetupError, TokenizerError, ValueError, OSError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    print(json.dumps(result.get("metrics", {}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
