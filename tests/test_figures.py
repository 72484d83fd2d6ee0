"""Every plotting function renders from saved results alone (no model) and writes PNG + PDF."""

import json
from pathlib import Path

import pytest
from matplotlib.image import imread

from prosv_lens.cli import main
from prosv_lens.evaluation.stats import bootstrap_mean
from prosv_lens.figures import (
    save,
    steering_scores_figure,
    tradeoff_figure,
    training_curves_figure,
)


def _est(*values: float) -> dict:
    return bootstrap_mean(list(values)).to_dict()


def test_evaluation_figures_render_from_json(tmp_path):
    scores = [
        {
            "method": m,
            **{k: _est(0.5 * i, 1.0, 2.0) for k in ("concept", "instruct", "fluency", "overall")},
        }
        for i, m in enumerate(["unsteered", "prompt", "diffmean", "prosv", "fssv"])
    ]
    points = [
        {"method": m, "utility": _est(0.4, 0.6), "robustness": _est(0.2 * i, 1.0)}
        for i, m in enumerate(["prosv", "fssv", "fssv 80%", "fssv 50%"])
    ]
    logs = {
        n: [{"step": t, "loss": 3 - t / 10, "alpha": 8 + t, "v_norm": 1 + t / 5} for t in range(6)]
        for n in ("prosv", "fssv")
    }
    saved = json.loads(json.dumps({"scores": scores, "points": points, "logs": logs}))
    for name, fig in [
        ("scores", steering_scores_figure(saved["scores"], "ocean")),
        ("tradeoff", tradeoff_figure(saved["points"])),
        ("training", training_curves_figure(saved["logs"])),
    ]:
        paths = save(fig, tmp_path / name)
        assert [p.suffix for p in paths] == [".png", ".pdf"]
        assert all(p.stat().st_size > 1000 for p in paths)
    with pytest.raises(ValueError, match="no scores"):
        steering_scores_figure([])


def test_committed_figures_are_all_redrawn_from_committed_results(tmp_path, capsys):
    """`prosv figures` on the repository's results/ redraws exactly the files in figures/ (same
    names, same image sizes; the logit-lens table byte for byte), without a model."""
    root = Path(__file__).resolve().parents[1]
    assert main(["figures", "--results", str(root / "results"), "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    drawn = sorted(p.name for p in tmp_path.iterdir())
    assert drawn == sorted(p.name for p in (root / "figures").iterdir())
    for name in drawn:
        if name.endswith(".png"):
            assert imread(tmp_path / name).shape == imread(root / "figures" / name).shape, name
        elif name.endswith(".md"):
            assert (tmp_path / name).read_text() == (root / "figures" / name).read_text()
