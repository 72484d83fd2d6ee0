"""Analysis figures render from results saved to disk and read back (tiny model, no model in the
plotting), `run_attention_analysis` writes every result, `regenerate_figures` draws them all."""

import json
import shutil

import numpy as np
import pytest
import torch
from _shared import PROMPTS

from prosv_lens.analysis import (
    AttentionFlowResult,
    DecayResult,
    HeadAttributionResult,
    KnockoutResult,
    PathPatchingResult,
    ResidualLensResult,
    VectorLensResult,
)
from prosv_lens.evaluation.stats import bootstrap_mean
from prosv_lens.experiments.analysis import ANALYSES, run_attention_analysis
from prosv_lens.figures import (
    FiguresError,
    attention_heatmap_figure,
    decay_figure,
    head_attribution_figure,
    knockout_figure,
    kv_path_figure,
    logit_lens_figure,
    logit_lens_table,
    regenerate_figures,
    save,
)
from prosv_lens.figures.analysis import attention_mass, display_token
from prosv_lens.interventions import SteeringVector

N_NEW = 6
STEMS = (
    "flow", "patching", "knockout_renorm", "knockout_plain", "decay", "vector_lens",
    "residual_lens", "heads",
)  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny):
    """Every analysis of a layer-0 PrOSV on the tiny model, saved by run_attention_analysis."""
    v = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(3))
    sv = SteeringVector(v / v.norm(), layer=0, positions="f2+l2", alpha=8.0)
    folder = tmp_path_factory.mktemp("results") / "attention_tiny"
    lines: list[str] = []
    index = run_attention_analysis(
        tiny, sv, PROMPTS, folder, max_new_tokens=N_NEW, top_layers=1, lens_k=5, log=lines.append
    )
    return folder, index, lines


def _load(folder, stem, kind):
    return kind.load(folder / stem)


def test_run_writes_every_result_and_an_index(saved):
    folder, index, lines = saved
    assert set(index["results"]) == set(STEMS)
    on_disk = json.loads((folder / "index.json").read_text())
    assert on_disk == json.loads(json.dumps(index))
    assert index["vector"]["layer"] == 0 and index["vector"]["positions"] == "f2+l2"
    assert len(index["answers"]) == len(PROMPTS) and index["max_new_tokens"] == N_NEW
    for stem in STEMS:
        assert (folder / f"{stem}.json").exists() and (folder / f"{stem}.npz").exists()
    assert len(lines) == 1 + len(STEMS)
    decay = _load(folder, "decay", DecayResult)
    assert decay.names == ("prosv", "fssv")  # default comparison: same direction, all tokens


def test_run_rejects_bad_requests(tiny, tmp_path):
    sv = SteeringVector(torch.ones(tiny.d_model), layer=0)
    with pytest.raises(ValueError, match="choose from"):
        run_attention_analysis(tiny, sv, PROMPTS, tmp_path, what=["flow", "nope"])
    with pytest.raises(TypeError, match="sequence of analysis names"):
        run_attention_analysis(tiny, sv, PROMPTS, tmp_path, what="flow")
    with pytest.raises(ValueError, match="max_new_tokens"):
        run_attention_analysis(tiny, sv, PROMPTS, tmp_path, max_new_tokens=1)
    assert "flow" in ANALYSES and not any(tmp_path.iterdir())


def _written(fig, path):
    paths = save(fig, path)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_attention_heatmap_shows_the_pooled_mass_change(saved, tmp_path):
    flow = _load(saved[0], "flow", AttentionFlowResult)
    valid = flow.gen_valid.astype(bool)
    expect = (flow.mass_steered - flow.mass_unsteered)[:, :, valid].mean(axis=-1)
    fig = attention_heatmap_figure(flow)
    drawn = np.asarray(fig.axes[0].images[0].get_array())
    assert drawn.shape == (len(flow.layers), 4) and np.allclose(drawn, expect)
    assert np.abs(expect).max() > 0  # the layers above L do change their attention
    assert np.allclose(np.asarray(fig.axes[1].images[0].get_array()), attention_mass(flow))
    _written(fig, tmp_path / "heat")
    no_sink = attention_mass(flow, skip_first_slot=True)
    assert (no_sink <= attention_mass(flow) + 1e-12).all()
    _written(
        attention_heatmap_figure(flow, show_steered=False, skip_first_slot=True), tmp_path / "h2"
    )


def test_decay_figure_plots_the_mean_effect_per_position(saved, tmp_path):
    decay = _load(saved[0], "decay", DecayResult)
    fig = decay_figure(decay, log_scale=True)
    lines = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 1]
    assert [ln.get_label() for ln in lines] == ["prosv", "fssv"]
    for i, ln in enumerate(lines):
        reached = decay.gen_valid[i].any(axis=0)
        assert np.allclose(ln.get_ydata(), decay.mean_kl()[i][reached])
        assert ln.get_xdata()[0] == 1
    _written(fig, tmp_path / "decay")


def test_knockout_figure_bars_are_the_pooled_means(saved, tmp_path):
    kos = [_load(saved[0], s, KnockoutResult) for s in ("knockout_renorm", "knockout_plain")]
    fig = knockout_figure(kos)
    heights = [p.get_height() for p in fig.axes[0].patches]
    keys = ("kl_effect", "kl_effect_knocked", "kl_damage")
    expect = [kos[i].summary()[k] for k in keys for i in range(2)]
    assert np.allclose(heights, expect)
    assert heights[0] > 0 and heights[2] == pytest.approx(0, abs=1e-9)  # renormalised: cut fully
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["L1-2\nrenormalised", "L1-2\nnot renormalised"]
    _written(fig, tmp_path / "ko")
    with pytest.raises(ValueError, match="no knock-out"):
        knockout_figure([])


def test_kv_path_figure_shows_restore_and_inject_shares(saved, tmp_path):
    pp = _load(saved[0], "patching", PathPatchingResult)
    fig = kv_path_figure(pp)
    assert len(fig.axes) == 3  # all layers, single layers, heads of the top layer
    # Restoring or injecting keys and values at every layer above L carries the whole effect.
    bars = fig.axes[0].patches
    kv_heights = [p.get_height() for p in bars if abs(p.get_x() + p.get_width() / 2 - 2) < 0.5]
    assert len(kv_heights) == 2 and np.allclose(kv_heights, 1.0, atol=1e-4)
    single = [ln for ln in fig.axes[1].get_lines() if ln.get_label() == "restore kv"]
    assert list(single[0].get_xdata()) == [1, 2]
    _written(fig, tmp_path / "kv")
    _written(kv_path_figure(pp, measure="logprob"), tmp_path / "kv_lp")


def test_logit_lens_figure_and_table(saved, tmp_path):
    vec = _load(saved[0], "vector_lens", VectorLensResult)
    res = _load(saved[0], "residual_lens", ResidualLensResult)
    fig = logit_lens_figure([vec, res], k=5)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == display_token(vec.top_tokens[0]) and len(labels) == 10
    widths = [p.get_width() for p in fig.axes[0].patches]
    assert widths[0] == pytest.approx(float(vec.logits[vec.top_ids[0]]))
    assert widths[0] == pytest.approx(float(vec.logits.max()))
    _written(fig, tmp_path / "lens")
    table = logit_lens_table([vec, res], k=3)
    assert table.count("| 1 |") == 2 and f"{float(vec.logits.min()):+.3f}" in table


def test_display_token_decodes_byte_level_and_sentencepiece():
    assert display_token("Ġocean") == "␣ocean"
    assert display_token("Ċ") == "⏎"
    assert display_token("ĉ") == "⇥"  # a byte-level tab
    assert display_token("▁the") == "␣the"
    assert display_token("âĢĻ") == "\u2019"  # a byte-level curly apostrophe
    assert display_token("æµ·") == "\\u6d77"  # a CJK character the font lacks is escaped


def test_head_attribution_figure(saved, tmp_path):
    dla = _load(saved[0], "heads", HeadAttributionResult)
    fig = head_attribution_figure(dla)
    assert np.allclose(np.asarray(fig.axes[0].images[0].get_array()), dla.mean_head_change())
    _written(fig, tmp_path / "dla")


def _est(*values):
    return bootstrap_mean(list(values)).to_dict()


def test_regenerate_figures_draws_every_saved_result(saved, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(saved[0], results / "attention_tiny")
    run = results / "demo-1"
    run.mkdir()
    crit = ("concept", "instruct", "fluency", "overall")
    methods = ("unsteered", "prosv", "fssv")
    (run / "results.json").write_text(
        json.dumps({
            "concept": "the ocean", "model": "tiny", "layer": 0,
            "steering": [{"method": m, **{c: _est(0.1, 1.0) for c in crit}} for m in methods],
            "robustness": [{"method": m, **{c: _est(0.5, 1.5) for c in crit}} for m in methods],
            "utility": {m: {"accuracy": _est(0.0, 1.0)} for m in methods},
            "training": {"prosv": {"seconds": 1.0, "log": [
                {"step": t, "loss": 2.0 - t, "alpha": 3.0, "v_norm": 1.0} for t in range(3)
            ]}},
        })
    )  # fmt: skip
    out = tmp_path / "figures"
    written = regenerate_figures(results, out)
    expected = {
        f"attention_tiny_{n}"
        for n in (
            "attention_heatmap", "decay", "kv_paths", "head_attribution", "knockout", "logit_lens",
        )
    } | {f"demo-1_{n}" for n in ("steering_scores", "utility_vs_robustness", "training_curves")}  # fmt: skip
    stems = {p.stem for p in written if p.suffix == ".png"}
    assert stems == expected
    assert {p.name for p in out.iterdir()} == {p.name for p in written}
    assert {p.suffix for p in written} == {".png", ".pdf", ".md"}
    assert all(p.stat().st_size > 500 for p in written)
    # A results folder with nothing drawable, or no folder at all, is a clear error.
    (tmp_path / "empty").mkdir()
    with pytest.raises(FiguresError, match="no results to draw"):
        regenerate_figures(tmp_path / "empty", out)
    with pytest.raises(FiguresError, match="does not exist"):
        regenerate_figures(tmp_path / "missing", out)
