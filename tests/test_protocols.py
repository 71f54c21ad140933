"""Evaluation protocols (fvq/core/protocol_presets.py, fvq/eval/protocols.py): each protocol's preprocessing
pinned on known images."""
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from fvq.core.config import ConfigError, apply_overrides, base_config
from fvq.core.protocol_presets import PRESETS, crop_box, get_protocol, val_crop
from fvq.eval.protocols import jpeg_roundtrip, luma, psnr, ssim, to_image


def coordinate_image(h: int, w: int) -> Image.Image:
    """R = row, G = column (mod 256), B = 7: a crop's first pixel says where the crop box starts."""
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return Image.fromarray(np.stack([r % 256, c % 256, np.full_like(r, 7)], -1).astype(np.uint8))


def test_official_crop_is_a_torchvision_centre_crop_without_resize():
    # 259 x 303: offsets round(1.5) = 2 and round(23.5) = 24 (halves to even), no resampling
    out = val_crop(coordinate_image(259, 303), 256, "center")
    assert out.shape == (256, 256, 3) and tuple(out[0, 0]) == (2, 24, 7) and tuple(out[-1, -1]) == (257 % 256, 23, 7)
    # smaller than the crop: zero padding, the original image in the middle (CenterCrop's pad then crop)
    small = val_crop(coordinate_image(200, 300), 256, "center")
    assert small[:28].max() == 0 and tuple(small[28, 0]) == (0, 22, 7) and small[228:].max() == 0


def test_llamagen_and_fvq_crops_floor_the_offsets():
    img = coordinate_image(256, 303)  # short side already 256: no resampling, only the box differs
    assert crop_box(303, 256, 256, "adm") == (0, 23) and crop_box(303, 256, 256, "center") == (0, 24)
    assert tuple(val_crop(img, 256, "adm")[0, 0]) == (0, 23, 7)
    assert tuple(val_crop(img, 256, "resize")[0, 0]) == (0, 23, 7)
    # ADM halves with BOX while the short side >= 2 x size: 520 x 600 -> 260 x 300 -> bicubic to 256 x 295
    big = val_crop(coordinate_image(520, 600), 256, "adm")
    assert big.shape == (256, 256, 3)
    resized = coordinate_image(520, 600).resize((300, 260), Image.BOX).resize((295, 256), Image.BICUBIC)
    np.testing.assert_array_equal(big, np.asarray(resized)[:, 19:275])


def test_uint8_conversion_official_rounds_llamagen_truncates():
    # 127.5 x + 127.5 = 10.5: official round() -> 10 (half to even), LlamaGen floor(127.5 x + 128) -> 11
    x = torch.tensor([-1.0, 10.5 / 127.5 - 1, 0.0, 1.0, 1.5]).view(1, 1, 1, 5)
    assert (to_image(x, "round") * 255).round().flatten().tolist() == [0, 10, 128, 255, 255]
    assert (to_image(x, "trunc") * 255).round().flatten().tolist() == [0, 11, 128, 255, 255]
    assert to_image(x, "none").flatten().tolist()[-1] == 1.0  # fvq: clamped float, not quantised
    assert to_image(torch.tensor([float("nan")]).view(1, 1, 1, 1), "round").item() == pytest.approx(128 / 255)


def test_luma_is_bt601_studio_swing():
    colours = torch.tensor([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    y = luma(colours.view(5, 3, 1, 1)).flatten() * 255
    assert y.tolist() == pytest.approx([16, 16 + 219.0, 16 + 65.481, 16 + 128.553, 16 + 24.966])


def test_psnr_channel_y_vs_rgb():
    a = torch.zeros(1, 3, 8, 8)
    b = a.clone()
    b[:, 2] = 0.1  # error in blue only: Y sees 24.966/255 of it
    rgb = psnr(a, b, get_protocol("fvq")).item()
    y = psnr(a, b, get_protocol("official")).item()
    assert rgb == pytest.approx(10 * np.log10(3 / 0.01), rel=1e-6)
    assert y == pytest.approx(10 * np.log10(1 / ((0.1 * 24.966 / 255) ** 2 + 1e-8)), rel=1e-6)
    assert psnr(a, a, get_protocol("official")).item() == pytest.approx(80.0)  # pyiqa's mse + 1e-8


def _piq_style_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """The formula of piq.ssim written out: 11x11 Gaussian (sigma 1.5), 'valid' windows, population
    (co)variances, C1 = 0.01^2, C2 = 0.03^2 on images divided by data_range, mean over channels."""
    import torch.nn.functional as F

    g = torch.arange(11, dtype=torch.float64) - 5
    k = torch.exp(-(g[:, None] ** 2 + g[None] ** 2) / (2 * 1.5 ** 2))
    k = (k / k.sum()).view(1, 1, 11, 11).repeat(3, 1, 1, 1)
    x, y = (torch.from_numpy(v).permute(2, 0, 1)[None] / data_range for v in (a, b))
    f = lambda t: F.conv2d(t, k, groups=3)  # noqa: E731
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = (2 * mx * my + c1) * (2 * sxy + c2) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def test_official_ssim_is_the_piq_formula_with_data_range_2():
    g = np.random.default_rng(0)
    a = g.random((32, 40, 3))
    b = np.clip(a + g.normal(0, 0.1, a.shape), 0, 1)
    official = ssim(a, b, get_protocol("official"))
    assert official == pytest.approx(_piq_style_ssim(a, b, 2.0), abs=1e-9)
    # data_range=2 on [0,1] images is not the same number as data_range=1: it must be pinned per protocol
    assert abs(official - ssim(a, b, get_protocol("official", ssim_range=1.0))) > 5e-4
    assert get_protocol("llamagen").ssim_range == 2.0 and get_protocol("fvq").ssim_range == 1.0
    assert np.isnan(ssim(a[:10, :10], b[:10, :10], get_protocol("official")))  # smaller than the window


def test_jpeg_round_trip_is_pil_default_quality_75():
    img = np.asarray(coordinate_image(32, 32)).copy()
    img[..., 2] = np.arange(32, dtype=np.uint8)[None] * 8
    default, q75 = io.BytesIO(), io.BytesIO()
    Image.fromarray(img).save(default, format="JPEG")  # the official code: PIL .save() to a .JPEG name
    Image.fromarray(img).save(q75, format="JPEG", quality=75)
    assert default.getvalue() == q75.getvalue()
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    out = jpeg_roundtrip(x, 75)
    decoded = np.asarray(Image.open(io.BytesIO(q75.getvalue())).convert("RGB"))
    np.testing.assert_array_equal((out[0].permute(1, 2, 0) * 255).round().byte().numpy(), decoded)
    assert not torch.equal(out, x)  # lossy: the round trip changes the image
    assert PRESETS["official"].fid_jpeg == 75 and PRESETS["fvq"].fid_jpeg == 0 == PRESETS["llamagen"].fid_jpeg


def test_protocol_options_and_bad_input():
    assert get_protocol("official", psnr_channel="rgb").psnr_channel == "rgb"
    assert get_protocol("fvq", ssim_window="gaussian11").ssim_window == "gaussian11"
    with pytest.raises(ValueError, match="eval.protocol='adm' is not one of fvq, llamagen, official"):
        get_protocol("adm")
    with pytest.raises(ConfigError, match="eval.protocol='adm' is not one of"):
        apply_overrides(base_config("cpu"), ["eval.protocol=adm"])
    with pytest.raises(ConfigError, match="eval.extra='imagenet:/x': expected NAME:PATH"):
        apply_overrides(base_config("cpu"), ["eval.extra=imagenet:/x"])
    with pytest.raises(ConfigError, match="eval.extra='coco:'"):
        apply_overrides(base_config("cpu"), ["eval.extra=coco:"])


def test_paper_preset_uses_the_official_evaluation():
    e = base_config("paper").eval
    assert (e.protocol, e.psnr_channel, e.ssim_range, e.ssim_window, e.lpips_net) == \
        ("official", "y", 2.0, "gaussian11", "alex")
    assert e.extra.startswith("coco:")
    c = base_config("cpu").eval  # the cpu scale keeps the harness's own protocol (signatures unchanged)
    assert (c.protocol, c.psnr_channel, c.ssim_range, c.ssim_window, c.lpips_net, c.extra) == \
        ("fvq", "auto", 0.0, "auto", "loss", "")


# ---- the protocols inside a run's evaluation -------------------------------------------------------------
class _Noisy(torch.nn.Module):
    """A fixed-noise 'autoencoder' over a real VQ index stream (usage needs a quantizer with num_codes)."""

    def __init__(self):
        super().__init__()
        self.quantizer = type("Q", (), {"num_codes": 4})()

    def forward(self, x):
        from typing import NamedTuple

        class Out(NamedTuple):
            indices: torch.Tensor

        g = torch.Generator().manual_seed(1)
        return x + 0.05 * torch.randn(x.shape, generator=g), Out(torch.zeros(len(x), 4, dtype=torch.long))


def test_evaluate_follows_the_official_protocol():
    from fvq.core.data import build_dataset
    from fvq.eval.evaluate import evaluate

    ds = build_dataset("photos", "val", 32, n=6)
    off = evaluate(_Noisy(), ds, batch_size=6, fid=False, protocol="official").metrics
    own = evaluate(_Noisy(), ds, batch_size=6, fid=False, protocol="fvq").metrics
    x = torch.stack([ds[i] for i in range(6)])
    x_hat, _ = _Noisy()(x)
    p = get_protocol("official")
    a, b = to_image(x, "round"), to_image(x_hat, "round")
    assert off["psnr"] == pytest.approx(float(psnr(a, b, p).mean()), rel=1e-9)
    want = np.mean([ssim(a[i].permute(1, 2, 0).double().numpy(), b[i].permute(1, 2, 0).double().numpy(), p)
                    for i in range(6)])
    assert off["ssim"] == pytest.approx(want, rel=1e-9)
    assert off["psnr"] != pytest.approx(own["psnr"], abs=0.05)  # Y on uint8 images vs RGB on floats
    forced = evaluate(_Noisy(), ds, batch_size=6, fid=False, protocol="official", psnr_channel="rgb").metrics
    assert forced["psnr"] == pytest.approx(float(psnr(a, b, get_protocol("fvq")).mean()), rel=1e-5)  # float32 MSE


def test_eval_lpips_is_alexnet_from_a_given_file_or_missing_with_reason(tmp_path):
    import lpips

    from fvq.build import build_eval_lpips
    from fvq.core.config import apply_overrides

    cfg = apply_overrides(base_config("cpu"), ["eval.lpips=true", "eval.lpips_net=alex",
                                                f"eval.lpips_weights={tmp_path / 'absent.pth'}"])
    module, reason = build_eval_lpips(cfg, torch.device("cpu"), loss_lpips=None)
    assert module is None and "alexnet-owt-7be5be79.pth" in reason and "eval.lpips_weights" in reason
    # a whole LPIPS state dict (the format of pyiqa's LPIPS_v0.1_alex file) loads as it is
    ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    torch.save({k: v for k, v in ref.state_dict().items() if not k.startswith("lins.")}, tmp_path / "alex.pth")
    cfg = apply_overrides(cfg, [f"eval.lpips_weights={tmp_path / 'alex.pth'}"])
    module, reason = build_eval_lpips(cfg, torch.device("cpu"), loss_lpips=None)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert reason == "" and torch.allclose(module(x, y), ref(x, y))
    off = apply_overrides(base_config("cpu"), ["eval.lpips=true"])  # lpips_net=loss without the loss term
    assert build_eval_lpips(off, torch.device("cpu"), None)[1].startswith("no LPIPS module")


def _write_jpegs(folder, n=3):
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.asarray(coordinate_image(40 + i, 48))).save(folder / f"{i:012d}.jpg")


def test_coco_extra_set_gets_its_own_metrics(tmp_path):
    from fvq.build import build_extra_datasets, evaluate_run
    from fvq.core.config import apply_overrides

    _write_jpegs(tmp_path / "val2017")
    cfg = apply_overrides(base_config("cpu"), ["eval.fid=false", "eval.protocol=official", "eval.images=4",
                                                "data.val_size=4", f"eval.extra=coco:{tmp_path / 'val2017'}"])
    (name, coco), = build_extra_datasets(cfg)
    assert name == "coco" and len(coco) == 3 and tuple(coco[0].shape) == (3, 32, 32)
    from fvq.core.data import build_dataset

    res = evaluate_run(cfg, _Noisy(), build_dataset("photos", "val", 32, n=4), torch.device("cpu"), None, "off")
    assert res.metrics["coco/eval_images"] == 3 and "coco/psnr" in res.metrics and res.metrics["eval_images"] == 4
    assert res.missing["coco/rfid"] == "disabled (eval.fid=false)" and res.missing["coco/lpips"] == "off"
    for bad, why in ((tmp_path / "nowhere", "does not exist"), (tmp_path / "empty", "holds no .jpg/.jpeg/.png")):
        bad.mkdir(exist_ok=True) if why.startswith("holds") else None
        cfg2 = apply_overrides(cfg, [f"eval.extra=coco:{bad}"])
        with pytest.raises(FileNotFoundError, match=f"eval.extra=coco:{bad}: {bad} {why}"):
            build_extra_datasets(cfg2)


HAVE_FID = os.path.isfile(os.environ.get("FVQ_FID_WEIGHTS", "")) or \
    __import__("fvq.eval.inception", fromlist=["x"]).find_fid_weights()[0] is not None


@pytest.mark.skipif(not HAVE_FID, reason="no FID Inception weights (run `make weights`)")
def test_official_rfid_goes_through_jpeg_on_both_sides(tmp_path):
    from fvq.core.data import build_dataset
    from fvq.eval.evaluate import evaluate

    class Same(_Noisy):
        def forward(self, x):
            return x, super().forward(x)[1]

    ds = build_dataset("photos", "val", 32, n=8)
    kw = dict(batch_size=8, cache_dir=str(tmp_path))
    same = evaluate(Same(), ds, protocol="official", **kw).metrics["rfid"]
    assert same == pytest.approx(0.0, abs=1e-4)  # the same image, the same JPEG, the same features
    noisy_off = evaluate(_Noisy(), ds, protocol="official", **kw).metrics["rfid"]
    noisy_own = evaluate(_Noisy(), ds, protocol="fvq", **kw).metrics["rfid"]
    assert noisy_off > 0 and noisy_own > 0 and noisy_off != pytest.approx(noisy_own, rel=1e-3)
    assert len(list(tmp_path.glob("ref_*.npz"))) == 2  # one real-side cache per protocol


def test_run_evaluates_coco_at_the_end_and_a_missing_coco_is_one_line_exit_2(tmp_path):
    import json
    import subprocess
    import sys

    from fvq.core.config import apply_overrides
    from fvq.train import train

    _write_jpegs(tmp_path / "val2017")
    small = ["optim.steps=4", "log.every=2", "data.train_size=32", "data.val_size=8", "eval.images=8",
             "eval.batch=8", "optim.batch=8", "quant.codebook_size=64", "log.progress=off", "eval.fid=false",
             "eval.protocol=official"]
    cfg = apply_overrides(base_config("cpu"), [*small, f"eval.extra=coco:{tmp_path / 'val2017'}"])
    out = train(cfg, str(tmp_path / "run"), log=lambda *a, **k: None)
    assert out["metrics"]["coco/eval_images"] == 3 and "coco/psnr" in out["metrics"]
    assert json.loads((tmp_path / "run" / "final.json").read_text())["missing"]["coco/rfid"].startswith("disabled")
    p = subprocess.run([sys.executable, "-m", "fvq.train", f"out={tmp_path / 'r2'}", *small,
                        f"eval.extra=coco:{tmp_path / 'nowhere'}"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "eval.extra=coco:" in p.stderr and p.stderr.strip().count("\n") == 0, p.stderr
