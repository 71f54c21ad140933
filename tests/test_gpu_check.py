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
    assert set(r["img_s_per_gpu"]) == {"1024", "4096"}
    for s in r["search"]:
        assert s["search_s"] > 0 and s["gemm_s"] > 0 and s["official_s"] > 0
        assert s["same_indices_as_official"] is True  # chunked search == the official full-matrix argmin
        assert s["full_matrix_mib"] == pytest.approx(s["n"] * s["k"] * 4 / 2**20)
    c = r["convergence"]
    assert c["finite"] and c["decreased"] and c["loss_last"] < c["loss_first"]


def test_gpu_mode_without_a_gpu_is_one_line_exit_2(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the GPU mode would run")
    p = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path / "x.json")], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "--tiny" in p.stderr and p.stderr.strip().count("\n") == 0
    assert not (tmp_path / "x.json").exists()
