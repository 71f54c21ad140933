"""sweeps/estimate.py: GPU-hours and wall time of a launch, from a measured img/s or from FLOPs."""
import json

import pytest

from sweeps.estimate import estimate, gpu_kind, load_measured
from sweeps.scale import resolve

REPORT = {"mode": "gpu", "img_s_per_gpu": {"16384": 80.0, "262144": 60.0}, "img_s_includes_lpips": True,
          "img_s_lpips": ["random-init VGG16 of the trained one's shape (timing only)"],
          "provenance": {"device": "NVIDIA H100 80GB HBM3"}, "path": "results/gpu/nvidia-h100.json"}
# written by gpu_check before it timed the LPIPS term: no img_s_includes_lpips field
OLD_REPORT = {k: v for k, v in REPORT.items() if not k.startswith("img_s_") or k == "img_s_per_gpu"}


def test_flops_estimate_says_so_and_scales_with_gpus():
    cfg = resolve({}, "paper")
    one, sixteen = estimate(cfg, 1, "a100", reports=[]), estimate(cfg, 16, "a100", reports=[])
    assert one.steps == sixteen.steps == 40 * 1_281_167 // 128 and one.images == one.steps * 128
    assert one.source.startswith("FLOPs:") and "assumed" in one.source
    assert sixteen.gpu_hours == pytest.approx(one.gpu_hours, rel=0.05)  # the projector is paid by every rank
    assert sixteen.wall_hours == pytest.approx(sixteen.gpu_hours / 16)
    assert estimate(resolve({"epochs": 120}, "paper"), 16, "a100", reports=[]).gpu_hours == \
        pytest.approx(3 * sixteen.gpu_hours, rel=1e-3)


def test_measured_speed_is_used_scaled_to_the_spec_gpu_and_named():
    cfg = resolve({"quant.codebook_size": 262144, "quant.group": 64}, "paper")
    on_h100 = estimate(cfg, 16, "h100", reports=[REPORT])
    assert on_h100.img_s_per_gpu == 60.0 and "measured on NVIDIA H100" in on_h100.source
    assert on_h100.gpu_hours == pytest.approx(on_h100.images / 60.0 / 3600)
    on_a100 = estimate(cfg, 16, "a100", reports=[REPORT])
    assert on_a100.img_s_per_gpu == pytest.approx(60.0 * 312 / 989) and "a100 / h100 bf16 peak" in on_a100.source
    near = estimate(resolve({"quant.codebook_size": 65536, "quant.group": 64}, "paper"), 16, "h100",
                    reports=[REPORT])
    assert near.img_s_per_gpu == 80.0 and "K=16,384" in near.source  # nearest measured K (log scale)
    assert estimate(resolve({}, "cpu"), 1, "a100", reports=[REPORT]).source.startswith("FLOPs")  # not VQ-16


def test_warning_when_the_job_cannot_finish_within_its_requeues():
    cfg = resolve({}, "paper")
    e = estimate(cfg, 1, "a100", timeout_min=1440, max_requeues=3, reports=[REPORT])
    assert e.wall_hours > 4 * 24 and "max_requeues=3" in e.warning
    assert estimate(cfg, 16, "a100", timeout_min=1440, max_requeues=3, reports=[REPORT]).warning == ""


def test_load_measured_reads_gpu_reports_only(tmp_path):
    (tmp_path / "h100.json").write_text(json.dumps({**REPORT, "path": None}))
    (tmp_path / "cpu.json").write_text(json.dumps({**REPORT, "mode": "tiny"}))
    (tmp_path / "broken.json").write_text("{")
    got = load_measured(str(tmp_path))
    assert len(got) == 1 and got[0]["img_s_per_gpu"]["16384"] == 80.0
    assert gpu_kind("NVIDIA A100-SXM4-80GB") == "a100" and gpu_kind("cpu") == ""


def test_a_timing_without_the_lpips_term_is_called_optimistic():
    cfg = resolve({}, "paper")  # trains with the LPIPS term (loss.perceptual_weight=1)
    new, old = estimate(cfg, 16, "h100", reports=[REPORT]), estimate(cfg, 16, "h100", reports=[OLD_REPORT])
    assert "optimistic" not in new.source and new.img_s_per_gpu == old.img_s_per_gpu == 80.0
    assert "optimistic: timed without the LPIPS term (a report from before gpu_check timed it)" in old.source
    skipped = {**REPORT, "img_s_includes_lpips": False, "img_s_lpips": ["absent (loss.perceptual_weight=0)"]}
    assert "optimistic" in estimate(cfg, 16, "h100", reports=[skipped]).source
    no_lpips = resolve({"loss.perceptual_weight": 0.0}, "paper")  # the lighter step is this run's own
    assert "optimistic" not in estimate(no_lpips, 16, "h100", reports=[OLD_REPORT]).source
    # equally near codebook sizes: the timing of the whole step wins, whichever report comes first
    both = [{**OLD_REPORT, "img_s_per_gpu": {"16384": 99.0}}, REPORT]
    assert estimate(cfg, 16, "h100", reports=both).img_s_per_gpu == 80.0
