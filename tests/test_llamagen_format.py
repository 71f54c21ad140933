"""LlamaGen-format checkpoints (FVQ's released tokenizers) in and out: fvq/vq/checkpoint_io.py, python -m fvq.evaluate,
model.init. The LlamaGen side is written here from its tokenizer/tokenizer_image/vq_model.py (key names, shapes and
forward order), independently of the mapping under test."""
import argparse
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from fvq.build import build_model
from fvq.core.checkpoint import CheckpointError
from fvq.core.config import Config, apply_overrides, to_flat_dict
from fvq.vq.checkpoint_io import detect_format, load_weights, to_llamagen
from fvq.vq.models import ArchSpec, VQModel
from fvq.vq.quantize import VectorQuantizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["quant.codebook_size=64", "model.channel=16"]


def llamagen_shapes(ch_mult, K, d, ch=128, nrb=2, z=256) -> dict[str, tuple]:
    """{key: shape} of LlamaGen's VQModel(ModelArgs(...)).state_dict(), from vq_model.py: VQModel 32-39, Encoder
    70-102, Decoder 137-167, VectorQuantizer 207-212, ResnetBlock 287-297, AttnBlock 320-324, resampling 372/387."""
    s: dict[str, tuple] = {}

    def conv(name, cin, cout, k):
        s[f"{name}.weight"], s[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        s[f"{name}.weight"] = s[f"{name}.bias"] = (c,)

    def res(name, cin, cout):
        norm(f"{name}.norm1", cin), conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout), conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for x in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{x}", c, c, 1)

    n, in_mult = len(ch_mult), (1, *ch_mult)
    conv("encoder.conv_in", 3, ch, 3)
    for i in range(n):
        cin, cout = ch * in_mult[i], ch * ch_mult[i]
        for j in range(nrb):
            res(f"encoder.conv_blocks.{i}.res.{j}", cin, cout)
            cin = cout
            if i == n - 1:
                attn(f"encoder.conv_blocks.{i}.attn.{j}", cin)
        if i != n - 1:
            conv(f"encoder.conv_blocks.{i}.downsample.conv", cin, cin, 3)
    res("encoder.mid.0", cin, cin), attn("encoder.mid.1", cin), res("encoder.mid.2", cin, cin)
    norm("encoder.norm_out", cin), conv("encoder.conv_out", cin, z, 3)
    cin = ch * ch_mult[-1]
    conv("decoder.conv_in", z, cin, 3)
    res("decoder.mid.0", cin, cin), attn("decoder.mid.1", cin), res("decoder.mid.2", cin, cin)
    for idx, level in enumerate(reversed(range(n))):
        cout = ch * ch_mult[level]
        for j in range(nrb + 1):
            res(f"decoder.conv_blocks.{idx}.res.{j}", cin, cout)
            cin = cout
            if level == n - 1:
                attn(f"decoder.conv_blocks.{idx}.attn.{j}", cin)
        if level != 0:
            conv(f"decoder.conv_blocks.{idx}.upsample.conv", cin, cin, 3)
    norm("decoder.norm_out", cin), conv("decoder.conv_out", cin, 3, 3)
    s["quantize.embedding.weight"], s["quantize.codebook_used"] = (K, d), (65536,)
    conv("quant_conv", z, d, 1), conv("post_quant_conv", d, z, 1)
    return s


def llamagen_forward(sd, a: ArchSpec, x):
    """LlamaGen's VQModel.forward in eval, as functions of its state dict (vq_model.py: Encoder 105-125, Decoder
    172-194, VectorQuantizer 215-260 without l2 norm, ResnetBlock 299-314, AttnBlock 327-351, resampling 374-396);
    GroupNorm's group count is the arch's (LlamaGen hard-codes 32, vq_model.py:362). -> (x_hat, indices)."""
    def c(h, p, stride=1, pad=None):
        w = sd[f"{p}.weight"]
        return F.conv2d(h, w, sd[f"{p}.bias"], stride=stride, padding=w.shape[-1] // 2 if pad is None else pad)

    def gn(h, p):
        return F.silu(F.group_norm(h, a.norm_groups, sd[f"{p}.weight"], sd[f"{p}.bias"], eps=1e-6))

    def res(h, p):
        t = c(gn(c(gn(h, f"{p}.norm1"), f"{p}.conv1"), f"{p}.norm2"), f"{p}.conv2")
        return (c(h, f"{p}.nin_shortcut") if f"{p}.nin_shortcut.weight" in sd else h) + t

    def attn(h, p):
        b, ch, hh, ww = h.shape
        hn = F.group_norm(h, a.norm_groups, sd[f"{p}.norm.weight"], sd[f"{p}.norm.bias"], eps=1e-6)
        q, k, v = (c(hn, f"{p}.{x}").reshape(b, ch, hh * ww) for x in "qkv")
        w = torch.softmax(torch.bmm(q.permute(0, 2, 1), k) * ch ** -0.5, dim=2)  # (b, query, key)
        return h + c(torch.bmm(v, w.permute(0, 2, 1)).reshape(b, ch, hh, ww), f"{p}.proj_out")

    def blocks(h, part, i, count):
        for j in range(count):
            h = res(h, f"{part}.conv_blocks.{i}.res.{j}")
            if f"{part}.conv_blocks.{i}.attn.{j}.q.weight" in sd:
                h = attn(h, f"{part}.conv_blocks.{i}.attn.{j}")
        return h

    def mid(h, part):
        return res(attn(res(h, f"{part}.mid.0"), f"{part}.mid.1"), f"{part}.mid.2")

    n = len(a.ch_mult)
    h = c(x, "encoder.conv_in")
    for i in range(n):
        h = blocks(h, "encoder", i, a.num_res_blocks)
        if i != n - 1:
            h = c(F.pad(h, (0, 1, 0, 1)), f"encoder.conv_blocks.{i}.downsample.conv", stride=2, pad=0)
    z = c(c(gn(mid(h, "encoder"), "encoder.norm_out"), "encoder.conv_out"), "quant_conv")
    e = sd["quantize.embedding.weight"]
    flat = z.permute(0, 2, 3, 1).reshape(-1, e.shape[1])
    idx = ((flat ** 2).sum(1, keepdim=True) + (e ** 2).sum(1) - 2 * flat @ e.t()).argmin(1)
    zq = e[idx].reshape(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
    h = mid(c(c(zq, "post_quant_conv"), "decoder.conv_in"), "decoder")
    for i in range(n):
        h = blocks(h, "decoder", i, a.num_res_blocks + 1)
        if i != n - 1:
            h = c(F.interpolate(h, scale_factor=2.0, mode="nearest"), f"decoder.conv_blocks.{i}.upsample.conv")
    return c(gn(h, "decoder.norm_out"), "decoder.conv_out"), idx.reshape(zq.shape[0], *zq.shape[2:])


def model(*extra: str, seed: int = 0, arch=None, noise: float = 0.05):
    """A small model with every weight moved off its init (a swapped or misplaced tensor must show)."""
    torch.manual_seed(seed)
    if arch is not None:
        m = VQModel(arch, 16, VectorQuantizer(64, 16))
    else:
        m = build_model(apply_overrides(Config(), ["quant.projector=none", *SMALL, *extra]))
    with torch.no_grad():
        for t in m.parameters():
            t.add_(torch.randn_like(t) * noise)
    return m.eval()


def images(n=2, seed=1):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def save(tmp_path, obj, name="lg.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def one_line_error(fn) -> str:
    with pytest.raises(CheckpointError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ---- the mapping against LlamaGen's own names, shapes and forward -------------------------------------------------

@pytest.mark.parametrize("arch,ch_mult", [("vq-16", (1, 1, 2, 2, 4)), ("vq-8", (1, 2, 2, 4))])
def test_our_presets_write_exactly_llamagens_keys_and_shapes(arch, ch_mult):
    # FVQ-16384: VQ-16 with K=16,384 and d=256 (FVQ scripts/recon/FVQ-16384.sh); VQ_8 / VQ_16: vq_model.py:418-422
    with torch.device("meta"):
        ours = VQModel(arch, 256, VectorQuantizer(16384, 256))
    written = {k: tuple(v.shape) for k, v in to_llamagen(ours).items()}
    assert written == llamagen_shapes(ch_mult, 16384, 256)


@pytest.mark.parametrize("arch", ["cpu-4", ArchSpec(8, (1, 2), 1, 16, norm_groups=4)],
                         ids=["cpu-4", "per-level-res-and-attn"])
def test_written_weights_compute_what_llamagen_computes(arch):
    m = model(arch=arch)
    sd = to_llamagen(m)
    assert set(sd) == set(llamagen_shapes(m.spec.ch_mult, 64, 16, m.spec.ch, m.spec.num_res_blocks,
                                          m.spec.z_channels))
    x = images()
    with torch.no_grad():
        ref, ref_idx = llamagen_forward(sd, m.spec, x)
        x_hat, q = m(x)
    assert torch.equal(q.indices, ref_idx)
    torch.testing.assert_close(x_hat, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("wrap", ["model", "state_dict", "bare", "ema", "llamagen-train"])
def test_round_trip_gives_identical_outputs(tmp_path, wrap):
    src = model("quant.projector=vqbridge", "quant.init=default")  # the bridge is baked into the written codebook
    sd = to_llamagen(src)
    obj = {"model": {"model": sd}, "state_dict": {"state_dict": sd}, "bare": sd,
           "ema": {"ema": sd, "model": to_llamagen(model(seed=5))},  # ema first, as LlamaGen's evaluation
           "llamagen-train": {"model": sd, "optimizer": {}, "steps": 10, "args": argparse.Namespace(vq_model="VQ-16")}}
    path = save(tmp_path, obj[wrap])
    dst = model(seed=3)
    assert load_weights(dst, path) == "llamagen"
    x = images()
    with torch.no_grad():
        (a, qa), (b, qb) = src(x), dst(x)
    assert torch.equal(qa.indices, qb.indices) and torch.equal(a, b)


def test_our_own_checkpoint_loads_by_its_names(tmp_path):
    src = model("quant.projector=vqbridge")
    path = save(tmp_path, {"step": 3, "model": src.state_dict(), "config": {}}, "ckpt.pt")
    dst = model("quant.projector=vqbridge", seed=4)
    assert detect_format(src.state_dict()) == "fvq" and load_weights(dst, path) == "fvq"
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


# ---- one line naming the key or the file --------------------------------------------------------------------------

def test_wrong_codebook_size_names_the_codebook_and_what_fits(tmp_path):
    path = save(tmp_path, {"model": to_llamagen(model())})
    msg = one_line_error(lambda: load_weights(model("quant.codebook_size=128"), path, "llamagen"))
    assert "quantize.embedding.weight" in msg and "quant.codebook_size=64 model.channel=16" in msg


def test_another_architecture_names_its_first_key(tmp_path):
    path = save(tmp_path, {"model": to_llamagen(model())})
    msg = one_line_error(lambda: load_weights(model("model.arch=cpu-2"), path))
    assert path in msg and "does not map" in msg


@pytest.mark.parametrize("edit,key", [
    ("extra", "encoder.conv_blocks.0.res.9.conv1.weight"),
    ("missing", "decoder.conv_out.bias"),
    ("fvq-format", "quantize.qbridge.blocks.0.weight"),
    ("ddp-prefix", "module.encoder.conv_in.weight"),
])
def test_a_key_that_does_not_map_or_is_missing_is_named(tmp_path, edit, key):
    sd = to_llamagen(model())
    if edit == "missing":
        del sd[key]
    elif edit == "ddp-prefix":
        sd = {f"module.{k}": v for k, v in sd.items()}
    else:
        sd[key] = torch.zeros(3)
    msg = one_line_error(lambda: load_weights(model(), save(tmp_path, {"model": sd}), "llamagen"))
    assert repr(key) in msg
    assert edit != "fvq-format" or "convert_fullvq2vq" in msg


def test_truncated_missing_or_weightless_file_is_named(tmp_path):
    path = save(tmp_path, {"model": to_llamagen(model())})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(open(path, "rb").read()[:20_000])
    for p in (str(cut), str(tmp_path / "absent.pt"), save(tmp_path, {"codebook": torch.zeros(4, 2), "n": 3}, "cb.pt")):
        assert p in one_line_error(lambda: load_weights(model(), p))


def test_a_released_codebook_refuses_a_projector(tmp_path):
    path = save(tmp_path, {"model": to_llamagen(model())})
    assert "quant.projector=none" in one_line_error(lambda: load_weights(model("quant.projector=vqbridge"), path,
                                                                         "llamagen"))


# ---- python -m fvq.evaluate ---------------------------------------------------------------------------------------

def test_cli_unknown_format_is_one_line_and_exit_2():
    r = subprocess.run([sys.executable, "-m", "fvq.evaluate", "ckpt=x.pt", "format=nope"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "format='nope'" in r.stderr


CPU_EVAL = ["scale=cpu", *SMALL, "data.val_size=8", "eval.images=8", "eval.batch=8", "eval.fid=false",
            "eval.protocol=official"]


def test_cli_evaluates_a_llamagen_file(tmp_path, capsys):
    from fvq.evaluate import main

    path = save(tmp_path, {"model": to_llamagen(model())})
    assert main([f"ckpt={path}", "format=llamagen", *CPU_EVAL]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "llamagen" and out["metrics"]["eval_images"] == 8 and out["metrics"]["psnr"] > 0
    assert "rfid" in out["missing"]
    assert main([f"ckpt={path}", "format=llamagen", *CPU_EVAL, "quant.codebook_size=128"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "quantize.embedding.weight" in err
    assert main([f"ckpt={path}", "format=llamagen", *CPU_EVAL, "quant.projector=vqbridge"]) == 2
    assert main([f"ckpt={path}", "nope.key=1"]) == 2


def test_cli_evaluates_our_checkpoint_under_its_stored_config(tmp_path, capsys):
    from fvq.evaluate import main

    cfg = apply_overrides(Config(), SMALL)
    path = save(tmp_path, {"step": 1, "model": model("quant.projector=vqbridge").state_dict(),
                           "config": to_flat_dict(cfg)}, "ckpt.pt")
    assert main([f"ckpt={path}", "format=fvq", *[a for a in CPU_EVAL if a.startswith(("data.", "eval."))]]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["eval_images"] == 8


# ---- model.init ---------------------------------------------------------------------------------------------------

TRAIN = ["quant.projector=none", *SMALL, "optim.steps=1", "optim.batch=4", "data.train_size=8", "data.val_size=4",
         "eval.images=4", "eval.batch=4", "eval.fid=false", "log.every=1", "log.progress=off",
         "optim.lr_scale=1e-6"]  # one step at a negligible lr: the weights stay the file's


def test_model_init_starts_training_from_the_file(tmp_path):
    from fvq.train import train

    src = model()
    path = save(tmp_path, {"model": to_llamagen(src)})
    lines = []
    train(apply_overrides(Config(), [*TRAIN, f"model.init={path}"]), str(tmp_path / "run"),
          log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert any(f"model.init: llamagen weights from {path}" in x for x in lines)
    after = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)["model"]
    for k, v in src.state_dict().items():
        torch.testing.assert_close(after[k], v, atol=1e-6, rtol=0)


def test_model_init_mismatch_fails_the_run_naming_the_key(tmp_path):
    from fvq.train import train

    path = save(tmp_path, {"model": to_llamagen(model())})
    with pytest.raises(CheckpointError, match="quantize.embedding.weight"):
        train(apply_overrides(Config(), [*TRAIN, "quant.codebook_size=128", f"model.init={path}"]),
              str(tmp_path / "run"), log=lambda *a, **k: None)
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "FAILED"
