"""``prosv axbench-eval``: the AxBench multi-concept run on the tiny model and a fake AxBench
folder — every method judged per concept, scores saved, a rerun resumes without retraining or
rejudging, a changed run is refused, and bad inputs are one-line errors."""

import json

import pytest
import test_reproduce
from test_reproduce import HashJudge

import prosv_lens.experiments.axbench_eval as ax
from prosv_lens.cli import main
from prosv_lens.errors import ConfigError, RunMismatchError
from prosv_lens.experiments.axbench_eval import AxBenchEvalConfig, run_axbench_eval

axbench_folder = test_reproduce.axbench_folder  # the fake AxBench folder fixture
METHODS = ["unsteered", "prompt", "diffmean", "prosv", "fssv"]


def _cfg(folder, out, **changes) -> AxBenchEvalConfig:
    return AxBenchEvalConfig(
        axbench=str(folder),
        out=str(out),
        **{"n_concepts": 2, "sizes": "smoke", "layer": 1, **changes},
    )


def test_run_judges_every_method_and_resumes(tiny, axbench_folder, tmp_path, monkeypatch):
    out = tmp_path / "run"
    scores = run_axbench_eval(_cfg(axbench_folder, out), model=tiny, judge=HashJudge())
    assert [s.method for s in scores] == METHODS
    assert len(scores[0].factors) == 2  # one mean per concept behind each CI
    saved = json.loads((out / "scores.json").read_text())["methods"]
    assert [s["method"] for s in saved] == METHODS
    assert (out / "steering_scores.png").exists()
    assert sorted(p.name for p in (out / "vectors" / "prosv").glob("*.json")) == [
        "0.json",
        "1.json",
    ]

    monkeypatch.setattr(ax, "train", lambda *a, **k: pytest.fail("retrained on resume"))
    judge = HashJudge()
    again = run_axbench_eval(_cfg(axbench_folder, out), model=tiny, judge=judge)
    assert judge.calls == [] and [s.to_dict() for s in again] == saved


def test_a_changed_run_is_refused(tiny, axbench_folder, tmp_path):
    out = tmp_path / "run"
    run_axbench_eval(_cfg(axbench_folder, out, n_concepts=1), model=tiny, judge=HashJudge())
    with pytest.raises(RunMismatchError, match="n_concepts"):
        run_axbench_eval(_cfg(axbench_folder, out, n_concepts=2), model=tiny, judge=HashJudge())


def test_bad_settings_are_config_errors(axbench_folder, tmp_path):
    with pytest.raises(ConfigError, match="sizes must be one of full, smoke"):
        _cfg(axbench_folder, tmp_path, sizes="huge")
    with pytest.raises(ConfigError, match="n_concepts must be a whole number >= 1"):
        _cfg(axbench_folder, tmp_path, n_concepts=0)
    with pytest.raises(ConfigError, match="holds 3 concepts, fewer than --concepts 9"):
        run_axbench_eval(_cfg(axbench_folder, tmp_path / "x", n_concepts=9), judge=HashJudge())
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--axbench", "nope", "--out", "o"], "nope"),
        (["--axbench", "AX", "--concepts", "0", "--out", "o"], "--concepts"),
        (["--axbench", "AX", "--concepts", "9", "--out", "o"], "fewer than --concepts 9"),
        (["--axbench", "AX", "--out", "o", "--sizes", "huge"], "--sizes"),
        (["--axbench", "AX", "--out", "afile"], "afile"),
    ],
)
def test_bad_inputs_are_one_line_errors(axbench_folder, tmp_path, monkeypatch, capsys, args, named):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    argv = ["axbench-eval", *(str(axbench_folder) if a == "AX" else a for a in args)]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    assert code == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert named in err and "\n" not in err and "Traceback" not in err and not captured.out
    assert not (tmp_path / "o").exists()
