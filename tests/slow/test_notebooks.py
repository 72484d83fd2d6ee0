"""Every notebook source runs end to end in smoke mode (real SmolLM2, toy sizes) and writes its
outputs. Each runs in its own process (as a fresh kernel would), in a temporary folder."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _shared import AXBENCH, needs_axbench

from prosv_lens.analysis import ANALYSES
from prosv_lens.vector_io import load_vector

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


def _run(name: str, cwd: Path, **extra_env: str) -> float:
    env = {
        **os.environ,
        **extra_env,
        "PROSV_SMOKE": "1",
        "MPLBACKEND": "Agg",
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
    }
    code = f"import runpy; runpy.run_path({str(NOTEBOOKS / name)!r}, run_name='__main__')"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return time.perf_counter() - start


def test_every_notebook_has_a_test():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.py")) == [
        "01_quickstart.py",
        "02_joint_training.py",
        "03_attention_flow.py",
        "04_axbench_eval.py",
    ]


def test_quickstart_notebook(tmp_path):
    _run("01_quickstart.py", tmp_path)
    saved = json.loads((tmp_path / "quickstart_answers.json").read_text())
    assert set(saved["answers"]) == {"unsteered", "prosv", "fssv"}
    for texts in saved["answers"].values():
        assert len(texts) == len(saved["questions"]) == 1 and all(t.strip() for t in texts)
    vector = load_vector(tmp_path / "ocean_prosv")
    assert vector.layer == 12 and str(vector.positions) == "f2+l2"


def test_joint_training_notebook(tmp_path):
    _run("02_joint_training.py", tmp_path, PROSV_RESULTS=str(ROOT / "results"),
         PROSV_AXBENCH=str(AXBENCH / "prod_2b_l10_v1"))  # fmt: skip
    saved = json.loads((tmp_path / "joint_training/summary.json").read_text())
    assert list(saved["runs"]) == ["paper", "small init", "alpha = 1", "sgd"]
    runs = saved["runs"]
    assert runs["alpha = 1"]["alpha"] == 1.0  # the ablation really keeps the factor fixed
    assert runs["paper"]["alpha"] != runs["small init"]["alpha"]
    for r in runs.values():
        assert 0 < r["heldout_loss"] < 20 and 0 < r["train_loss_last"] < 20
    drawn = {p.name for p in (tmp_path / "joint_training").glob("*.png")}
    # The committed beta x lr_alpha sweeps are drawn from their sweep.json when present.
    sweeps = {f"{n}.png" for n in ("heatmap_axbench", "heatmap_medium")
              if (ROOT / "results" / n / "sweep.json").exists()}  # fmt: skip
    assert sweeps and drawn == {"training_curves.png"} | sweeps


@needs_axbench
def test_axbench_eval_notebook(tmp_path):
    """The experiment (prosv axbench-eval, smoke sizes, real data) and the notebook that shows
    the committed results of its full run."""
    from prosv_lens.cli import main

    out = tmp_path / "axbench_eval"
    argv = ["axbench-eval", "--axbench", str(AXBENCH / "prod_2b_l10_v1"), "--concepts", "2"]
    assert main([*argv, "--sizes", "smoke", "--out", str(out)]) == 0
    _run("04_axbench_eval.py", NOTEBOOKS)  # reads ../results/axbench_l10
    scores = json.loads((tmp_path / "axbench_eval/scores.json").read_text())["methods"]
    assert [s["method"] for s in scores] == ["unsteered", "prompt", "diffmean", "prosv", "fssv"]
    for s in scores:
        assert 0 <= s["overall"]["mean"] <= 2 and s["n_answers"] == 2 * 2  # 2 concepts x 2 test
        assert len(s["factors"]) == 2
    assert all(f in (0.1, 0.2, 0.4) for f in scores[2]["factors"].values())
    rows = (tmp_path / "axbench_eval/rows.jsonl").read_text().splitlines()
    # per concept: 4 single-candidate methods x 2 test + diffmean (3 factors x 2 select + 2 test)
    assert len(rows) == 2 * (4 * 2 + 3 * 2 + 2)
    assert (tmp_path / "axbench_eval/steering_scores.png").exists()


def test_attention_flow_notebook(tmp_path):
    _run("03_attention_flow.py", tmp_path)
    index = json.loads((tmp_path / "results/attention_notebook/index.json").read_text())
    assert {r["analysis"] for r in index["results"].values()} == set(ANALYSES)
    assert index["vector"]["layer"] == 12 and index["max_new_tokens"] == 8
    pngs = {p.name for p in (tmp_path / "figures").glob("*.png")}
    expected = {
        f"attention_notebook_{n}.png"
        for n in (
            "attention_heatmap", "decay", "kv_paths", "head_attribution", "knockout", "logit_lens",
        )
    }  # fmt: skip
    assert pngs == expected
    assert all((tmp_path / "figures" / p).with_suffix(".pdf").exists() for p in pngs)
