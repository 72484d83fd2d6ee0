"""Analysis modules on the tiny model: exact invariants of patching, knock-out, flow, decay, lens.

A float64 copy of the tiny model keeps float noise far below the 1e-5 tolerances; the layer-0
vector leaves two attention layers (1, 2) to carry the edit.
"""

import numpy as np
import pytest
import torch
from _shared import PROMPTS

from prosv_lens.analysis import (
    AttentionFlowResult,
    DecayResult,
    HeadAttributionResult,
    KnockoutResult,
    KVPatch,
    PathPatchingResult,
    ResidualLensResult,
    ResultFileError,
    VectorLensResult,
    attention_flow,
    effect_decay,
    generate_under_patch,
    head_attribution,
    knockout,
    pair_sequences,
    patched_logits,
    path_patching,
    prosv_vs_fssv,
    residual_diff_lens,
    run_pair,
    vector_logit_lens,
)
from prosv_lens.analysis.logit_lens import final_norm_weight
from prosv_lens.analysis.paired import attn_hook_name, forward, kv_cache_names, layers_above
from prosv_lens.generation import GenerationConfig, generate
from prosv_lens.interventions import SteeringVector, active_hook_count, run_with_steering
from prosv_lens.models import make_tiny_model
from prosv_lens.prompts import encode_prompts

N_NEW = 10


@pytest.fixture(scope="module")
def m64():
    model = make_tiny_model()
    model.bridge.to(torch.float64)
    yield model
    assert active_hook_count(model) == 0


@pytest.fixture(autouse=True)
def _no_leaks_on_m64(request):
    yield
    if "m64" in request.fixturenames:
        model = request.getfixturevalue("m64")
        leaked = active_hook_count(model)
        model.bridge.reset_hooks()
        assert leaked == 0


@pytest.fixture(scope="module")
def sv(m64):
    v = torch.randn(m64.d_model, generator=torch.Generator().manual_seed(1))
    return SteeringVector(v / v.norm(), layer=0, positions="f2+l2", alpha=8.0)


@pytest.fixture(scope="module")
def gen(m64, sv):
    """The steered greedy answers (left-padded prompts of different lengths) with step logits."""
    batch = encode_prompts(m64, PROMPTS)
    return generate(m64, batch, sv, GenerationConfig(max_new_tokens=N_NEW), record_logits=True)


@pytest.fixture(scope="module")
def seq(m64, sv, gen):
    return pair_sequences(m64, gen.prompt, sv, continuation=gen)


@pytest.fixture(scope="module")
def pair(m64, sv, seq):
    return run_pair(m64, seq, sv, cache=kv_cache_names(layers_above(m64, sv)))


def _unsteered_real(seq):
    """Real (non-padding) columns that the vector does not edit itself."""
    return seq.batch.attention_mask.bool() & ~seq.steered


def test_pair_is_the_prompt_then_the_continuation(seq, gen, sv):
    assert seq.n_gen == N_NEW and seq.texts == gen.texts
    assert torch.equal(seq.batch.input_ids[:, : gen.prompt.n_pos], gen.prompt.input_ids)
    prompt_steered = sv.positions.resolve(gen.prompt).mask
    no_answer = torch.zeros_like(gen.tokens, dtype=torch.bool)
    assert torch.equal(seq.steered, torch.cat([prompt_steered, no_answer], dim=1))
    assert int(seq.steered.sum()) == 4 * len(PROMPTS)
    assert torch.equal(seq.gen_valid.sum(1), torch.tensor(gen.lengths))
    assert torch.equal(seq.target_valid.sum(1), torch.tensor(gen.lengths) - 1)


def test_unpatched_runs_reproduce_steered_and_unsteered_logits(m64, sv, seq, gen, pair):
    b = seq.batch
    plain = run_with_steering(m64, (), b)  # float64 + left padding needs its NaN guard
    real = b.attention_mask.bool()
    assert (pair.unsteered - plain)[real].abs().max() <= 1e-9
    assert (pair.steered - run_with_steering(m64, sv, b))[real].abs().max() <= 1e-9
    # The teacher-forced steered logits are the KV-cache decoder's: gen_pos t predicts token t+1.
    for i, n in enumerate(gen.lengths):
        cols = seq.gen_columns[i, : n - 1]
        assert (pair.steered[i, cols] - gen.step_logits[i, 1:n]).abs().max() <= 1e-5


def test_restoring_all_keys_and_values_gives_unsteered_logits(m64, sv, seq, pair):
    above = layers_above(m64, sv)
    logits = patched_logits(m64, seq, sv, KVPatch(above, "kv"), "restore", pair.cache_unsteered)
    keep = _unsteered_real(seq)
    assert (pair.steered - pair.unsteered)[keep].abs().max() > 0.5  # the edit does reach them
    assert (logits - pair.unsteered)[keep].abs().max() <= 1e-5


def test_injecting_only_the_keys_and_values_gives_steered_logits(m64, sv, seq, pair):
    above = layers_above(m64, sv)
    logits = patched_logits(m64, seq, sv, KVPatch(above, "kv"), "inject", pair.cache_steered)
    keep = _unsteered_real(seq)
    assert (logits - pair.steered)[keep].abs().max() <= 1e-5


def test_keys_alone_or_values_alone_are_partial(m64, sv, seq, pair):
    above = layers_above(m64, sv)
    keep = _unsteered_real(seq)
    for component in ("k", "v"):
        logits = patched_logits(
            m64, seq, sv, KVPatch(above, component), "restore", pair.cache_unsteered
        )
        assert (logits - pair.unsteered)[keep].abs().max() > 1e-3
        assert (logits - pair.steered)[keep].abs().max() > 1e-3


def test_bad_patches_are_rejected(m64, sv, seq, pair):
    with pytest.raises(ValueError, match="above the vector's layer"):
        patched_logits(m64, seq, sv, KVPatch((0,), "kv"), "restore", pair.cache_unsteered)
    with pytest.raises(ValueError, match="component"):
        KVPatch((1,), "q")
    with pytest.raises(ValueError, match="mode"):
        patched_logits(m64, seq, sv, KVPatch((1,), "kv"), "swap", pair.cache_unsteered)


@pytest.fixture(scope="module")
def sweep(m64, sv, seq):
    return path_patching(m64, seq, sv, layer_components=("k", "v", "kv"), top_layers=1)


def test_path_patching_sweep_measures_and_ranks(sweep, m64):
    labels = list(sweep.labels)
    present = sweep.fraction_present("kl")
    lp_present = sweep.fraction_present("logprob")
    for mode, expected in (("restore", 0.0), ("inject", 1.0)):
        i = labels.index(f"{mode}/kv/L1,2")
        assert abs(present[i] - expected) <= 1e-9 and abs(lp_present[i] - expected) <= 1e-9
        assert np.abs(sweep.kl[i]).max() <= 1e-9 if mode == "inject" else True
    assert sweep.kl_unsteered.sum() > 0.1
    # 3 components x (all layers + 2 single layers) x 2 modes, then 2 kv heads of the top layer.
    assert len(labels) == 3 * 3 * 2 + 2 * 2
    ranked = sweep.ranking("restore", "kv")
    assert [r[0] for r in ranked] in (
        ["restore/kv/L1", "restore/kv/L2"],
        ["restore/kv/L2", "restore/kv/L1"],
    )
    assert ranked[0][1] >= ranked[1][1]
    top_layer = int(ranked[0][0].split("L")[1])
    heads = sweep.ranking("restore", "kv", heads=True)
    assert {r[0] for r in heads} == {f"restore/kv/L{top_layer}/h{h}" for h in range(2)}
    assert sweep.n_kv_heads == 2 and sweep.n_heads == 4
    assert np.all(sweep.kl >= -1e-12)


def test_regenerating_under_a_patch_matches_teacher_forcing(m64, sv, seq):
    patch = KVPatch(layers_above(m64, sv), "kv")
    cfg = GenerationConfig(max_new_tokens=6)
    regen = generate_under_patch(m64, seq, sv, patch, "restore", cfg, record_logits=True)
    nocache = generate_under_patch(
        m64, seq, sv, patch, "restore", GenerationConfig(max_new_tokens=6, use_cache=False),
        record_logits=True,
    )  # fmt: skip
    assert torch.equal(regen.tokens, nocache.tokens)
    assert (regen.step_logits - nocache.step_logits).abs().max() <= 1e-5
    # Teacher-forcing the regenerated answer under the same patch gives the decoder's logits.
    seq2 = pair_sequences(m64, regen.prompt, sv, continuation=regen)
    source = forward(m64, seq2, (), cache=kv_cache_names(patch.layers))[1]
    logits = patched_logits(m64, seq2, sv, patch, "restore", source)
    for i, n in enumerate(regen.lengths):
        cols = seq2.gen_columns[i, : n - 1]
        assert (logits[i, cols] - regen.step_logits[i, 1:n]).abs().max() <= 1e-5
    # After the first token (predicted by a steered column) the restored decoder is unsteered.
    plain = generate(m64, regen.prompt, (), cfg, record_logits=True)
    first_same = regen.tokens[:, 0] == plain.tokens[:, 0]
    assert (regen.step_logits[:, 0] - plain.step_logits[:, 0]).abs().max() > 1e-3
    for i in first_same.nonzero().flatten().tolist():
        assert torch.equal(regen.tokens[i], plain.tokens[i])


def test_knockout_with_renormalisation_cuts_the_edit_completely(m64, sv, seq):
    ko = knockout(m64, seq, sv, renormalize=True)
    assert ko.kl_effect.sum() > 0.1
    assert np.abs(ko.kl_effect_knocked).max() <= 1e-9
    # TransformerLens softmaxes in float32 even for float64 models: ~1e-7 noise in the pattern.
    assert np.abs(ko.logprob_steered_knocked - ko.logprob_unsteered_knocked).max() <= 1e-5
    assert ko.kl_damage.sum() > 0  # knocking out the sink changes the unsteered model itself
    assert set(ko.summary()) == {"kl_effect", "kl_effect_knocked", "kl_damage", "kl_damage_steered"}


def test_knockout_without_renormalisation_and_at_no_layer(m64, sv, seq):
    soft = knockout(m64, seq, sv, renormalize=False)
    assert soft.kl_effect_knocked.sum() > 1e-6  # keys still reach the softmax denominator
    none = knockout(m64, seq, sv, layers=())
    assert np.abs(none.kl_damage).max() <= 1e-12
    assert np.array_equal(none.kl_effect, none.kl_effect_knocked)


def test_attention_flow_masses(m64, sv, seq):
    flow = attention_flow(m64, seq, sv, layers=(0, 1, 2))
    n_rows, n_gen = seq.gen_valid.shape
    assert flow.mass_steered.shape == (3, 4, n_rows, n_gen)
    assert flow.slot_steered.shape == (3, 4, n_rows, n_gen, 4)
    for mass in (flow.mass_steered, flow.mass_unsteered):
        assert mass.min() >= 0 and mass.max() <= 1 + 1e-9
    assert np.allclose(flow.slot_steered.sum(-1), flow.mass_steered)
    # Layer L's attention runs before the edit: identical in both runs; above it they differ.
    assert np.array_equal(flow.mass_steered[0], flow.mass_unsteered[0])
    assert np.abs(flow.mass_steered[1:] - flow.mass_unsteered[1:]).max() > 1e-4
    # Against the full pattern: rows sum to 1, and the flow is their steered-column share.
    name = attn_hook_name(1, "pattern")
    pattern = forward(m64, seq, sv, cache=[name])[1][name]
    for i in range(n_rows):
        for t in range(int(seq.gen_valid[i].sum())):
            row = pattern[i, :, seq.gen_columns[i, t]]
            assert torch.allclose(row.sum(-1), torch.ones(4, dtype=row.dtype), atol=1e-6)
            expect = row[:, seq.steered[i]].sum(-1).numpy()
            assert np.allclose(flow.mass_steered[1, :, i, t], expect, atol=1e-12)
    assert flow.mean_mass().shape == (3, 4, n_gen)


def test_decay_of_a_zero_vector_is_zero_and_fssv_differs(m64, sv):
    zero = sv.replace(v=torch.zeros(m64.d_model))
    res = effect_decay(m64, PROMPTS, prosv_vs_fssv(zero), max_new_tokens=4)
    assert res.names == ("prosv", "fssv")
    assert np.array_equal(res.kl, np.zeros_like(res.kl)) and not res.prompt_end_kl.any()
    real = effect_decay(m64, PROMPTS, prosv_vs_fssv(sv), max_new_tokens=4)
    assert real.kl.shape[:2] == (2, len(PROMPTS)) and real.gen_valid.any(axis=(1, 2)).all()
    assert (real.kl >= -1e-12).all() and real.kl[0].sum() > 0 and real.kl[1].sum() > 0
    assert (real.prompt_end_kl > 0).all()
    assert real.mean_kl().shape == (2, real.kl.shape[2])


def test_vector_lens_ranks_an_unembedding_direction_first(m64):
    w_u = m64.bridge.unembed.W_U.detach()
    token = int(w_u.norm(dim=0).argmax())  # provably first by Cauchy-Schwarz
    v = w_u[:, token] / final_norm_weight(m64)
    lens = vector_logit_lens(m64, SteeringVector(v, layer=1, alpha=3.0), k=5)
    assert int(lens.top_ids[0]) == token and len(lens.top_tokens) == 5
    assert int(lens.bottom_ids[0]) == int(np.argmin(lens.logits))
    # The final norm really is "divide by the scale, multiply by the weight".
    x = torch.randn(2, 3, m64.d_model, dtype=torch.float64)
    rms = (x.pow(2).mean(-1, keepdim=True) + m64.bridge.cfg.eps).sqrt()
    assert torch.allclose(m64.bridge.ln_final(x), x / rms * final_norm_weight(m64))


def test_residual_lens_and_head_attribution(m64, sv, seq):
    below = residual_diff_lens(m64, seq, sv, read_layer=0, k=3)
    assert below.exact_mean.size == 0  # no exact counterpart below the last layer
    # At layer L the edit sits only at the steered columns: zero at every answer column.
    assert np.array_equal(below.mean_logits, np.zeros_like(below.mean_logits))
    final = residual_diff_lens(m64, seq, sv, k=3)
    assert final.exact_mean.shape == final.mean_logits.shape
    assert final.position_top_ids.shape == (*seq.gen_columns.shape, 3)
    # With a continuation both runs see, the lens tracks the true logit change to first order.
    assert np.corrcoef(final.mean_logits, final.exact_mean)[0, 1] > 0.5
    dla = head_attribution(m64, seq, sv)
    assert dla.heads_steered.shape == (2, 4, *seq.gen_columns.shape)
    assert np.abs(dla.heads_steered.sum(1) - dla.attn_steered).max() <= 1e-9
    assert np.abs(dla.heads_unsteered.sum(1) - dla.attn_unsteered).max() <= 1e-9
    assert np.abs(dla.heads_steered - dla.heads_unsteered).max() > 1e-4
    assert dla.mean_head_change().shape == (2, 4)


def test_results_round_trip_exactly(tmp_path, m64, sv, seq, sweep):
    results = [
        sweep,
        knockout(m64, seq, sv, layers=(2,)),
        attention_flow(m64, seq, sv),
        effect_decay(m64, PROMPTS[:1], {"prosv": sv}, max_new_tokens=3),
        vector_logit_lens(m64, sv, k=4),
        residual_diff_lens(m64, seq, sv, k=4),
        head_attribution(m64, seq, sv, layers=(2,)),
    ]
    kinds = (
        PathPatchingResult, KnockoutResult, AttentionFlowResult, DecayResult, VectorLensResult,
        ResidualLensResult, HeadAttributionResult,
    )  # fmt: skip
    for i, (res, kind) in enumerate(zip(results, kinds, strict=True)):
        json_path, npz_path = res.save(tmp_path / f"r{i}")
        assert json_path.exists() and npz_path.exists()
        back = kind.load(tmp_path / f"r{i}")
        assert back.same_as(res) and type(back) is kind
    assert not results[1].same_as(results[0])
    with pytest.raises(ResultFileError, match="KnockoutResult"):
        PathPatchingResult.load(tmp_path / "r1")
    with pytest.raises(ResultFileError, match="must both exist"):
        KnockoutResult.load(tmp_path / "missing")


def test_judge_under_patch_rates_the_regenerated_answers(m64, sv, seq):
    from prosv_lens.analysis import judge_under_patch
    from prosv_lens.evaluation.judges import Judge, Rating

    class CountingJudge(Judge):
        name = "counting"

        def rate(self, items):
            self.items = list(items)
            return [Rating(min(2.0, len(i.response) / 2), 1.0, 1.0) for i in items]

    judge = CountingJudge()
    patch = KVPatch(layers_above(m64, sv), "v")
    gen, ratings = judge_under_patch(
        m64, seq, sv, patch, "inject", judge, concept="c", instructions=PROMPTS,
        config=GenerationConfig(max_new_tokens=3),
    )  # fmt: skip
    assert [i.response for i in judge.items] == list(gen.texts) and len(ratings) == len(PROMPTS)
    assert {i.concept for i in judge.items} == {"c"}
    with pytest.raises(ValueError, match="instructions"):
        judge_under_patch(m64, seq, sv, patch, "inject", judge, concept="c", instructions=["x"])
