"""``prosv reproduce smollm2-l12 --concepts 2`` at toy sizes through the console script, on the
embedded SmolLM2 and the shared AxBench Concept10 data, with the offline judge (slow: about
2 minutes, measured on the shared 2-core CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _shared import AXBENCH, needs_axbench

from prosv_lens.experiments import SETTINGS
from prosv_lens.models import cache_folder

pytestmark = pytest.mark.slow

TOY = ["--epochs", "2", "--n-train", "4", "--batch-size", "4", "--max-response-tokens", "32",
       "--n-eval", "4", "--max-new-tokens", "12", "--n-utility", "4", "--n-kl-prompts", "2",
       "--utility-tokens", "8"]  # fmt: skip


def _prosv(*args: str) -> subprocess.CompletedProcess:
    beside = Path(sys.executable).with_name("prosv")  # the venv's console script
    # One intra-op thread: on a 2-core machine shared with other processes, two spinning OpenMP
    # threads per process made this run take 16 min instead of 2 (measured here under load 4-5).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
           "PROSV_AXBENCH_ROOT": str(AXBENCH)}  # fmt: skip
    return subprocess.run(
        [str(beside), *args], capture_output=True, text=True, env=env, timeout=1200
    )


@needs_axbench
def test_reproduce_smollm2_two_concepts_end_to_end(tmp_path):
    out = tmp_path / "smollm2-l12"
    proc = _prosv("reproduce", "smollm2-l12", "--concepts", "2", "--out", str(out), *TOY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data_source"] == "folder:prod_2b_l10_v1" and len(summary["concepts"]) == 2
    assert summary["concepts"][0] == [0, "references to specific dates and publication information"]
    methods = {m["method"]: m for m in summary["methods"]}
    assert list(methods) == ["unsteered", "prompt", "diffmean", "prosv", "fssv"]
    for m in methods.values():
        assert 0 <= m["overall"]["mean"] <= 2 and m["n_answers"] == 2 * 2
        assert 0 <= m["utility_accuracy"]["mean"] <= 1
    assert methods["prosv"]["kl"]["mean"] > 0 and methods["fssv"]["kl"]["mean"] > 0
    assert "| prosv |" in proc.stdout and (out / "summary.md").read_text() in proc.stdout
    for cid in ("0000", "0001"):
        result = json.loads((out / "concepts" / cid / "result.json").read_text())
        assert result["train"]["prosv"]["steps"] == 2 and result["alphas"]["prosv"] > 0
        assert set(result["utility"]) == {"prompt", "diffmean", "prosv", "fssv"}
    # The registry's embedded shape is the converted checkpoint's.
    config = json.loads((cache_folder("smollm2-135m-instruct") / "config.json").read_text())
    shape = SETTINGS["smollm2-l12"].shape
    assert (shape.n_layers, shape.d_model, shape.d_mlp, shape.n_heads, shape.n_kv_heads,
            shape.head_dim, shape.d_vocab) == tuple(config[k] for k in (
        "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
        "num_key_value_heads", "head_dim", "vocab_size"))  # fmt: skip
    # The same command again: everything is finished, nothing is redone.
    again = _prosv("reproduce", "smollm2-l12", "--concepts", "2", "--out", str(out), *TOY)
    assert again.returncode == 0 and "resuming smollm2-l12" in again.stderr
    assert "trained" not in again.stderr and "done:" not in again.stderr
