"""Reliability class 2: training that explodes is stopped, never saved as a success.

The loss alone is a poor guard: the model's normalisation keeps it finite while alpha and v run
away. The trainer also watches the parameters and the edit's size relative to the residual.
"""

import math

import pytest
from _shared import SEA8

from prosv_lens.cli import main
from prosv_lens.errors import TrainingDivergedError
from prosv_lens.training import TrainConfig, train
from prosv_lens.training import trainer as trainer_module


@pytest.mark.parametrize("lr", [1e3, 1e2])
def test_a_runaway_edit_stops_training_and_names_the_step_and_settings(tiny, lr):
    cfg = TrainConfig.prosv(1, epochs=4, batch_size=4, lr_alpha=lr, lr_v=lr)
    with pytest.raises(TrainingDivergedError) as e:
        train(tiny, SEA8, cfg, progress=False)
    msg = str(e.value)
    assert "at step 0" in msg and "median residual norm" in msg and f"lr_v={lr}" in msg
    assert "\n" not in msg


def test_the_paper_settings_stay_far_below_the_limit(tiny):
    """The guard must not fire on ordinary runs: the largest edit stays < 5% of the limit."""
    result = train(tiny, SEA8, TrainConfig.prosv(1, epochs=4, batch_size=4), progress=False)
    edits = [abs(r["alpha"]) * r["v_norm"] for r in result.logs["sea"]]
    from prosv_lens.training.trainer import _Runner

    norm = _Runner(tiny, [SEA8], TrainConfig.prosv(1)).reference_resid_norm()
    assert max(edits) < 0.05 * trainer_module.EDIT_LIMIT * norm


def test_a_loss_that_stays_finite_while_parameters_explode_is_caught(tiny, monkeypatch):
    """Force the situation of the report: a finite loss, alpha running away."""
    monkeypatch.setattr(trainer_module, "EXPLOSION", math.inf)  # the loss guard cannot fire
    cfg = TrainConfig.prosv(1, epochs=4, batch_size=4, lr_alpha=1e4)
    with pytest.raises(TrainingDivergedError, match="the edit \\|alpha v\\|"):
        train(tiny, SEA8, cfg, progress=False)


def test_the_cli_saves_nothing_for_a_diverged_run(tiny, tmp_path, capsys):
    rows = "\n".join(
        f'{{"prompt": "{p}", "response": "{r}"}}'
        for p, r in zip(SEA8.prompts, SEA8.responses, strict=True)
    )
    (tmp_path / "sea.jsonl").write_text(rows)
    code = main(["train", "--model", "tiny", "--jsonl", str(tmp_path / "sea.jsonl"), "--layer",
                 "1", "--lr-alpha", "1000", "--lr-v", "1000", "--out", str(tmp_path / "vecs")])  # fmt: skip
    err = capsys.readouterr().err  # the progress bar's lines, then one error line
    last = err.rstrip("\n").split("\n")[-1]
    assert code == 2 and last.startswith("prosv train: error: training diverged")
    assert "Traceback" not in err
    assert not (tmp_path / "vecs").exists()
