"""The paper-scale generator recipe (fvq/generation/ar.py ``paper_recipe``) and what the cpu scale keeps."""
import pytest

from fvq.core.schedule import lr_factor
from fvq.generation.ar import AR_SCHED, ARConfig, ar_overrides, paper_recipe
from fvq.generation.gpt import PAPER_CFG
from sweeps.generation import PAPER_AR
from sweeps.identity import ar_signature
from sweeps.grids.generation import AR


@pytest.mark.parametrize("model, batch, epochs, lr", [("L", 2048, 300, 8e-4), ("XL", 1024, 350, 4e-4)])
def test_paper_recipe_is_the_fvq_scripts(model, batch, epochs, lr):
    """yfChang-cv/FVQ scripts/generation/train_c2i_L_lr.sh (--global-batch-size 2048 --epochs 300) and
    train_c2i_XL_lr.sh (1024, 350), both on imagenet_code_c2i_flip_ten_crop codes; the rest are the defaults of
    autoregressive/train/train_c2i_lr.py: lr 1e-4 x (batch // 256), AdamW betas (0.9, 0.95), weight decay
    0.05, grad clip 1.0, no --ema, class dropout 0.1 (LlamaGen's gpt.py), no warmup, 5% held, linear to 0.01."""
    r = paper_recipe(model)
    cfg = ar_overrides({**PAPER_AR, **r, "model": model, "cfg_scale": PAPER_CFG[model], "tokenizer": "t"})
    assert (cfg.batch, cfg.train_images, cfg.steps) == (batch, 1_281_167, epochs * (1_281_167 // batch))
    assert cfg.lr == pytest.approx(lr) == pytest.approx(1e-4 * (batch // 256))
    assert (cfg.weight_decay, cfg.beta1, cfg.beta2, cfg.grad_clip, cfg.class_dropout) == (0.05, 0.9, 0.95, 1.0, 0.1)
    assert (cfg.aug, cfg.cfg_interval, cfg.samples, cfg.device) == ("ten_crop_flip", -1, 50_000, "cuda")
    assert (AR_SCHED.warmup, AR_SCHED.constant, AR_SCHED.final) == (0.0, 0.05, 0.01)
    assert {m: c for m, c in AR} == PAPER_CFG  # the grid's points are the recipe's models, at their CFG


def test_schedule_follows_train_c2i_lr():
    """train_c2i_lr.py's combined_lr_lambda, rewritten: p = step / (total - 1); 1 while p < 0.05, then
    0.01 + 0.99 (1 - p) / 0.95 (no warmup)."""
    total = 2000

    def theirs(step):
        p = step / (total - 1)
        return 1.0 if p < 0.05 else 0.01 + 0.99 * (1 - p) / 0.95

    assert max(abs(lr_factor(s, total, AR_SCHED) - theirs(s)) for s in range(total)) < 1e-3
    assert lr_factor(total - 1, total, AR_SCHED) == pytest.approx(0.01)


def test_no_recipe_for_sizes_the_authors_did_not_train():
    with pytest.raises(ValueError, match="no paper recipe for GPT-B"):
        paper_recipe("B")


def test_cpu_defaults_and_signatures():
    """New keys default to the old behaviour (plain token caches, guidance on every code) and stay out of the
    delta; the signatures moved with the salt alone (ar-2: zero RoPE rows for the class prefix), so the
    committed cpu rows gen-80b190b2e6 / gen-707d7bf6a5 (identity rows) are not taken for the new science."""
    assert (ARConfig().aug, ARConfig().cfg_interval, ARConfig().batch, ARConfig().steps) == ("none", -1, 64, 300)
    cpu = ar_overrides({"model": "tiny", "cfg_scale": 1.0, "tokenizer": "t"})
    assert ar_signature("67224022a2", cpu) == "1ca31ec696"
    assert ar_signature("bf21a9e8fb", cpu) == "81ced4ccc1"
