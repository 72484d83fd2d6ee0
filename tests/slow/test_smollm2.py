"""Real-model tests on the embedded SmolLM2-135M-Instruct (slow: ~1-2 min in all on 2 CPU cores)."""

import json

import pytest
import torch
from _shared import assert_cached_equals_uncached

from prosv_lens.cli import main
from prosv_lens.generation import GenerationConfig, check_cache_equivalence, generate
from prosv_lens.interventions import SteeringVector, run_with_steering
from prosv_lens.positions import PositionSpec
from prosv_lens.prompts import encode_prompts
from prosv_lens.vector_io import load_vector

pytestmark = pytest.mark.slow

PROMPTS = ["Name three colors.", "Hi", "Write a haiku about autumn leaves."]
SPECS = [
    "all",
    "prompt",
    "f2+l2",
    "f4",
    "l4",
    "f4+l4",
    "idx:0,-1",
    "role:system",
    "role:user",
    "role:assistant",
]
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def _decoded(model, batch, spec, row=0):
    mask = PositionSpec.parse(spec).resolve(batch).mask[row]
    return [model.tokenizer.decode([t]) for t in batch.input_ids[row, mask].tolist()]


def test_chat_template_positions_decode_to_the_intended_tokens(smol):
    batch = encode_prompts(smol, ["Name three colors."], padding_side="left")
    ids = batch.input_ids[0].tolist()
    assert ids[:2] == [1, 9690]  # one <|im_start|> (BOS), then 'system': no doubled BOS
    assert _decoded(smol, batch, "f2+l2") == ["<|im_start|>", "system", "istant", "\n"]
    assert "".join(_decoded(smol, batch, "role:system")) == SYSTEM
    assert "".join(_decoded(smol, batch, "role:user")) == "Name three colors."
    assert "".join(_decoded(smol, batch, "role:assistant")) == "<|im_start|>assistant\n"
    custom = encode_prompts(smol, ["Hi"], system="Answer in French.", padding_side="right")
    assert "".join(_decoded(smol, custom, "role:system")) == "Answer in French."
    assert "".join(_decoded(smol, custom, "role:user")) == "Hi"


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_rows_match_single_rows(smol, side):
    batch = encode_prompts(smol, PROMPTS, padding_side=side)
    sv = SteeringVector(torch.randn(smol.d_model), layer=12, positions="f2+l2", alpha=300.0)
    logits = run_with_steering(smol, sv, batch)
    for i, p in enumerate(PROMPTS):
        alone = run_with_steering(smol, sv, encode_prompts(smol, [p]))[0]
        assert (logits[i, batch.attention_mask[i].bool()] - alone).abs().max() <= 1e-4


@pytest.mark.parametrize("side", ["left", "right"])
def test_cached_equals_uncached_for_every_spec_in_float64(smol64, side):
    """Float64 removes most fp32 reduction-order noise (~5e-5 here, the same with no vector),
    so 1e-4 tests the steering logic itself; the vector moves logits by > 1 at every spec."""
    batch = encode_prompts(smol64, PROMPTS, padding_side=side)
    assert_cached_equals_uncached(
        smol64, batch, layer=12, alpha=400.0, specs=SPECS, max_new_tokens=5
    )


def test_cached_equals_uncached_in_float32_at_float32_noise(smol):
    batch = encode_prompts(smol, PROMPTS, padding_side="left")
    sv = SteeringVector(torch.randn(smol.d_model), layer=12, positions="f2+l2", alpha=20.0)
    steered = check_cache_equivalence(smol, batch, sv, max_new_tokens=5)
    unsteered = check_cache_equivalence(smol, batch, (), max_new_tokens=5)
    assert steered.tokens_equal and unsteered.tokens_equal
    assert steered.max_abs_diff <= 3e-4 and unsteered.max_abs_diff <= 3e-4


def test_generation_stops_at_end_of_turn(smol):
    out = generate(
        smol, ["What is the capital of France?"], (), GenerationConfig(max_new_tokens=40)
    )
    assert out.texts[0].strip() == "The capital of France is Paris."
    assert out.lengths[0] < 40 and int(out.tokens[0, out.lengths[0] - 1]) == 2  # <|im_end|>


def test_demo_end_to_end(tmp_path, capsys):
    """The whole pipeline at smoke size: trains, judges, measures utility, writes the report."""
    args = ["demo", "--epochs", "1", "--n-train", "12", "--n-eval", "4", "--max-new-tokens", "4",
            "--n-utility", "4", "--n-kl-prompts", "2", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| method | alpha | concept | instruct | fluency | **overall** |" in out
    run = next(tmp_path.glob("demo-*"))
    prosv = load_vector(run / "vectors" / "prosv")
    assert (
        str(prosv.positions) == "f2+l2"
        and prosv.layer == 12
        and prosv.model_id == "smollm2-135m-instruct"
    )
    assert str(load_vector(run / "vectors" / "fssv").positions) == "all"
    results = json.loads((run / "results.json").read_text())
    assert [s["method"] for s in results["steering"]] == [
        "unsteered",
        "prompt",
        "diffmean",
        "prosv",
        "fssv",
    ]
    assert set(results["utility"]) == {
        "unsteered",
        "prompt",
        "diffmean",
        "prosv",
        "fssv",
        "fssv 80%",
        "fssv 50%",
    }
    assert all((run / f).exists() for f in results["figures"])
    rows = (run / "rows.jsonl").read_text().splitlines()
    # 2 test answers x 4 single-candidate methods + DiffMean's 4 factors x 2 + 2; robustness 7 x 2.
    assert len(rows) == 8 + 10 + 14
    assert main([*args, "--run", str(run)]) == 0  # resuming: nothing is generated twice
    assert len((run / "rows.jsonl").read_text().splitlines()) == len(rows)
