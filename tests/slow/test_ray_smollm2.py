"""A small real sweep on SmolLM2-135M-Instruct with the offline judge (MiniLM + SmolLM2 fluency),
run in this process and on 2 local Ray workers: the same cells, scores and judged answers."""

import pytest
import torch

pytest.importorskip("ray", reason="the Ray tests need the ray extra (bash install.sh installs it)")

from prosv_lens.experiments.sweeps import (  # noqa: E402
    PositionSweepConfig,
    SweepJob,
    execute_sweep,
    offline_judge,
)
from prosv_lens.experiments.units import compare_runs  # noqa: E402

pytestmark = pytest.mark.slow

CONFIG = PositionSweepConfig(
    model="smollm2-135m-instruct", layer=12, specs=("all", "f2+l2"), epochs=1, batch_size=8,
    n_train=8, n_heldout=4, n_eval=2, max_new_tokens=8,
)  # fmt: skip


def test_two_ray_workers_on_smollm2_give_the_in_process_results(smol, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each 1-core worker: CPU rounding depends on the thread count
    try:
        here = execute_sweep(
            SweepJob(CONFIG, model=smol, judge=offline_judge(smol)),
            tmp_path / "here",
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    assert here.summary.complete and here.summary.ran == 5
    ray_run = execute_sweep(SweepJob(CONFIG), tmp_path / "ray", workers=2, progress=False)
    assert ray_run.summary.complete and ray_run.summary.ran == 5 and ray_run.summary.workers == 2
    assert ray_run.summary.load_seconds > 0  # each worker loaded the real model itself
    rows = (tmp_path / "ray" / "rows.jsonl").read_text().splitlines()
    assert len(rows) == 2 * 3  # 2 judged answers for the baseline and each cell
    # the same vectors (bytes), answers, losses, judge details and scores
    assert compare_runs(tmp_path / "here", tmp_path / "ray") == []


def test_the_sweep_command_on_two_ray_workers(tmp_path, capsys):
    from prosv_lens.cli import main

    config = tmp_path / "tiny_heatmap.json"
    config.write_text(
        '{"kind": "heatmap", "model": "smollm2-135m-instruct", "layer": 12, "betas": [2.0],'
        ' "lr_alphas": [1.0, 10.0], "optimizers": ["adam"], "epochs": 1, "batch_size": 8,'
        ' "n_train": 8, "n_heldout": 4, "n_eval": 2, "max_new_tokens": 8}'
    )
    out, figures = tmp_path / "out", tmp_path / "figures"
    argv = ["sweep", str(config), "--out", str(out), "--figures", str(figures), "--workers", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "units: 5 in all, 0 already done, 5 run now on 2 worker(s), 0 failed" in printed
    assert "adam beta=2 lr_alpha=10: train loss" in printed
    assert sorted(p.name for p in figures.iterdir()) == ["out_heatmap.pdf", "out_heatmap.png"]
    assert main(argv) == 0  # a rerun: every unit done, nothing runs, same files
    assert "units: 5 in all, 5 already done, 0 run now" in capsys.readouterr().out
