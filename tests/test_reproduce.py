"""analysis.reproduce on one tiny run: identical, consistent and outside against a "committed" CSV made from
that run and then perturbed; bad input is one line, exit 2, nothing written; the launch's one-line note."""
import json

import pandas as pd
import pytest

from analysis import reproduce
from analysis.rows import METRICS, point_signature
from fvq.core import environment

TINY = ["optim.steps=8", "log.every=1", "log.ckpt_every=2", "data.train_size=64", "data.val_size=8",
        "eval.images=8", "eval.batch=8", "optim.batch=8", "eval.fid=false", "log.progress=off",
        "quant.codebook_size=64"]
GRID = "depth"


def committed_csv(results_dir, values: dict[int, dict], env: dict | None = None) -> dict[int, str]:
    """results/<GRID>.csv with the first point at the given seeds and metric values; {seed: signature}."""
    from sweeps import grids

    point = next(iter(grids.load(GRID).points()))
    sigs = reproduce.signatures(GRID, "cpu", dict(a.split("=", 1) for a in TINY), sorted(values))
    key = json.dumps(point, sort_keys=True)
    rows = [{"grid": GRID, "signature": sigs[(key, s)], "status": "FINISHED", "scale": "cpu", "source": "harness",
             "point": key, "paper_signature": point_signature(point), "seed": s, **{m: None for m in METRICS}, **v,
             **{f"env.{k}": x for k, x in (env or {}).items()}} for s, v in values.items()]
    results_dir.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(results_dir / f"{GRID}.csv", index=False)
    return {s: sigs[(key, s)] for s in values}


def run(tmp_path, *args):
    return reproduce.main([f"grid={GRID}", f"results={tmp_path / 'results'}", f"runs_dir={tmp_path / 'runs'}",
                           f"tracking_uri=sqlite:///{tmp_path}/mlflow.db", "parallel=1", *args, *TINY])


def verdicts(out: str) -> set[str]:
    return {line.split()[5] for line in out.splitlines()[1:] if len(line.split()) > 5 and line[:1].isalnum()
            and line.split()[5] in ("identical", "consistent", "outside", "failed")}


def test_identical_consistent_and_outside_on_one_tiny_run(tmp_path, capfd):
    # 1. a committed row far from anything the run gives, from another instruction set: outside
    placeholder = {"psnr": 99.0, "usage": 0.5, "rec_l2": 9.0}
    sigs = committed_csv(tmp_path / "results", {0: placeholder, 1: placeholder},
                         env={**environment.gather(), "isa": "AVX2", "threads": "1"})
    assert run(tmp_path, f"points={sigs[0]}") == 1
    out = capfd.readouterr().out
    assert verdicts(out) == {"outside"} and "isa AVX2 -> " in out, out
    assert not (tmp_path / "runs" / sigs[1] / "final.json").exists()  # only the chosen run was trained
    got = json.loads((tmp_path / "runs" / sigs[0] / "final.json").read_text())["metrics"]
    measured = {m: got[m] for m in ("psnr", "usage", "rec_l2")}

    # 2. the committed row is the run itself: identical, bit for bit (the run is not trained again)
    committed_csv(tmp_path / "results", {0: measured})
    assert run(tmp_path, "seeds=0") == 0
    out = capfd.readouterr().out
    assert verdicts(out) == {"identical"} and "3 identical" in out, out

    # 3. other committed seeds around it, its own value a hair off: consistent (inside the 95% interval)
    near = {s: {m: v * (1 - d) for m, v in measured.items()} for s, d in ((0, 1e-9), (1, 0.01), (2, 0.02))}
    committed_csv(tmp_path / "results", near)
    assert run(tmp_path, "seeds=0", f"points={sigs[0]}") == 0
    out = capfd.readouterr().out
    assert verdicts(out) == {"consistent"} and "committed environment unrecorded" in out, out


@pytest.mark.parametrize("args, words", [
    (["grid=nope"], "unknown grid 'nope'"),
    ([f"grid={GRID}", "optim.stepz=3"], "unknown key 'optim.stepz' (did you mean optim.steps"),
    ([f"grid={GRID}", "points=0123456789"], "points=0123456789: not a signature"),
    ([f"grid={GRID}", "seeds=5"], "seed 5 has no committed row"),
    (["grid=patch_size"], "grid patch_size has no committed finished rows"),
    ([f"grid={GRID}", "lock"], "no lock file"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch, args, words):
    committed_csv(tmp_path / "results", {0: {"psnr": 20.0}})
    if "lock" in args:
        monkeypatch.setattr(environment, "LOCK", tmp_path / "no-lock.txt")
        args = args[:-1]
    argv = [*args, f"results={tmp_path / 'results'}", f"runs_dir={tmp_path / 'runs'}", *TINY]
    assert reproduce.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and err.count("\n") == 0, err
    assert not (tmp_path / "runs").exists()


def test_a_launch_says_in_one_line_which_fields_differ(tmp_path):
    here = environment.gather()
    committed_csv(tmp_path / "results", {0: {"psnr": 20.0}})  # collected before the record: nothing to say
    assert reproduce.launch_note(GRID, tmp_path / "results", threads=int(here["threads"])) == ""
    committed_csv(tmp_path / "results", {0: {"psnr": 20.0}}, env=here)
    assert reproduce.launch_note(GRID, tmp_path / "results", threads=int(here["threads"])) == ""
    committed_csv(tmp_path / "results", {0: {"psnr": 20.0}}, env={**here, "isa": "AVX2", "threads": "1"})
    note = reproduce.launch_note(GRID, tmp_path / "results", threads=3)
    assert note.count("\n") == 0 and f"isa AVX2 -> {here['isa']}" in note and "threads 1 -> 3" in note, note
