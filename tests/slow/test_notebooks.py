"""Every notebook source runs end to end in smoke mode (real SmolLM2, toy sizes) and writes its
outputs. Each runs in its own process (as a fresh kernel would), in a temporary folder."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prosv_lens.analysis import ANALYSES
from prosv_lens.vector_io import load_vector

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _run(name: str, cwd: Path) -> float:
    env = {
        **os.environ,
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
        "03_attention_flow.py",
    ]


def test_quickstart_notebook(tmp_path):
    _run("01_quickstart.py", tmp_path)
    saved = json.loads((tmp_path / "quickstart_answers.json").read_text())
    assert set(saved["answers"]) == {"unsteered", "prosv", "fssv"}
    for texts in saved["answers"].values():
        assert len(texts) == len(saved["questions"]) == 1 and all(t.strip() for t in texts)
    vector = load_vector(tmp_path / "ocean_prosv")
    assert vector.layer == 12 and str(vector.positions) == "f2+l2"


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
