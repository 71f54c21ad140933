"""benchmarks/gpu_check.py in its CPU tiny mode: the same code paths a GPU run takes, in seconds."""
import json
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_mode_writes_one_json_with_every_section(tmp_path):
    out = tmp_path / "cpu.json"
    p = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tiny", "--out", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    assert r["mode"] == "tiny" and r["skipped"] == {}
    assert {"device", "commit", "torch", "date", "command"} <= set(r["provenance"])
    assert [c["case"] for c in r["train"]] == ["tiny-K1024-p4-b2", "tiny-K4096-p16-b2"]
    for c in r["train"]:
        assert "error" not in c and c["img_s"] > 0 and c["batch"] == 2
        # the timed step is the whole one: LPIPS on the trained backbone, or on a random one of its shape
        assert "perceptual" in c["final_terms"] and (c["lpips"] == "included" or c["lpips"].startswith(
            "random-init VGG16 of the trained one's shape"))
        assert c["peak_mib"] is None and c["peak_reserved_mib"] is None  # CPU: missing, with the reason
        assert set(c["missing"]) == {"peak_mib", "peak_reserved_mib"} and "CPU" in c["missing"]["peak_mib"]
    assert set(r["img_s_per_gpu"]) == {"1024", "4096"} and r["img_s_includes_lpips"] is True
    for s in r["search"]:
        assert s["search_s"] > 0 and s["gemm_s"] > 0 and s["official_s"] > 0
        assert s["same_indices_as_official"] is True  # chunked search == the official full-matrix argmin
        assert s["full_matrix_mib"] == pytest.approx(s["n"] * s["k"] * 4 / 2**20)
        assert {"search_extra_mib", "search_extra_reserved_mib"} <= set(s["missing"])
    c = r["convergence"]
    # at the lr of batch 128, not the rule's batch-4 lr (32x smaller), and by a margin rather than by noise
    assert c["lr"] == pytest.approx(1e-4) and c["lr_of_the_rule"] == pytest.approx(1e-4 * 4 / 128)
    assert c["finite"] and c["decreased"] and c["rel_decrease"] >= c["min_rel_decrease"] >= 0.2
    assert c["loss_last"] < c["loss_first"] and c["rec_last"] < c["rec_first"]


def test_random_lpips_backbone_has_the_trained_ones_shape():
    """Without its weights the timed LPIPS runs torchvision's VGG16 layers, as the `lpips` package slices
    them, at random init: the same parameter shapes as the trained backbone, so the same FLOPs."""
    import torchvision

    from benchmarks.gpu_check import TINY, _setup

    parts, note = _setup(TINY + ["quant.codebook_size=1024", "quant.group=4", "optim.batch=2"], torch.device("cpu"))
    assert parts.cfg.loss.perceptual_weight == 1.0 and parts.vqloss.perceptual_weight == 1.0
    assert parts.lpips is parts.vqloss.lpips is not None and not any(t.requires_grad for t in parts.lpips.parameters())
    trained = torchvision.models.vgg16().features.state_dict()
    got = {k.split(".", 1)[1]: v.shape for k, v in parts.lpips.net.state_dict().items()}  # slice{n}.{i}.{w|b}
    assert got and got == {k: trained[k].shape for k in got} and len(got) == len(trained)
    if note != "included":
        assert note == "random-init VGG16 of the trained one's shape (timing only)"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_memory_fields_allocated_and_reserved():
    from benchmarks.gpu_check import TINY, train_case

    ov = [o for o in TINY if o != "device=cpu"] + ["quant.codebook_size=1024", "quant.group=4", "optim.batch=2"]
    c = train_case("tiny-cuda", ov, torch.device("cuda"), steps=2, warmup=1)
    assert "error" not in c and "missing" not in c
    assert 0 < c["peak_mib"] <= c["peak_reserved_mib"]  # the allocator's pool holds at least what tensors do


def test_gpu_mode_without_a_gpu_is_one_line_exit_2(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the GPU mode would run")
    p = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path / "x.json")], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--tiny" in p.stderr and p.stderr.strip().count("\n") == 0
    assert not (tmp_path / "x.json").exists()
