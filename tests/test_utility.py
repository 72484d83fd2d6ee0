"""Utility under steering (KL damage, checked tasks, benchmark loaders) and suppression prompts."""

import json

import pytest
import torch

from prosv_lens.evaluation.checkers import CheckSpecError, chosen_letter, count_items, run_check
from prosv_lens.evaluation.robustness import SUPPRESSION_TEMPLATES, suppression_prompts
from prosv_lens.evaluation.utility import (
    BUILTIN_UTILITY,
    BenchmarkUnavailableError,
    KLConfig,
    UtilityConfig,
    UtilityItem,
    continuation_batch,
    evaluate_utility,
    gsm8k_item,
    kl_damage,
    load_tiny_gsm8k,
    load_tiny_mmlu,
    load_utility_items,
    mmlu_item,
    predicting_mask,
)
from prosv_lens.generation import GenerationConfig, generate
from prosv_lens.interventions import SteeringVector
from prosv_lens.prompts import encode_prompts

PROMPTS = ["Hi", "Name three colors.", "What is 2+2?"]
CFG = KLConfig(max_new_tokens=6, batch_size=2)

# ---------------------------------------------------------------------------- checkers

CASES = [
    ({"check": "contains_any", "answers": ["Paris"]}, "The capital is paris.", True),
    ({"check": "contains_any", "answers": ["red"]}, "I am tired.", False),  # whole words only
    ({"check": "contains_all", "answers": ["Saturday", "Sunday"]}, "Saturday and Sunday", True),
    ({"check": "contains_all", "answers": ["Saturday", "Sunday"]}, "Only Saturday", False),
    ({"check": "not_contains", "words": ["hot"]}, "The sun is bright.", True),
    ({"check": "not_contains", "words": ["hot"]}, "It is HOT.", False),
    ({"check": "number", "value": 12}, "7 + 5 = 12.", True),
    ({"check": "number", "value": 12}, "12 is 7 + 5", False),  # last number is 5
    ({"check": "number", "value": 12, "mode": "first"}, "12 is 7 + 5", True),
    ({"check": "number", "value": 1234}, "The total is 1,234.", True),
    ({"check": "number", "value": -3.5, "mode": "any"}, "from -3.5 to 4", True),
    ({"check": "number", "value": 4}, "no digits here, four", False),
    ({"check": "regex", "pattern": r"c\s*-\s*a\s*-\s*t"}, "C - A - T", True),
    ({"check": "regex", "pattern": "D", "ignore_case": False}, "d", False),
    ({"check": "uppercase"}, "HELLO, FRIEND! 123", True),
    ({"check": "uppercase"}, "HELLO, Friend!", False),
    ({"check": "uppercase", "min_letters": 5}, "HI", False),
    ({"check": "lowercase"}, "cats sleep a lot.", True),
    ({"check": "lowercase"}, "Cats sleep.", False),
    ({"check": "word_count", "max_words": 1}, "Tokyo.", True),
    ({"check": "word_count", "max_words": 1}, "It is Tokyo.", False),
    ({"check": "word_count", "min_words": 2, "max_words": 3}, "one two", True),
    ({"check": "n_items", "n": 3}, "- apple\n- pear\n- plum", True),
    ({"check": "n_items", "n": 3}, "1. red\n2. blue\n3) green\n4. pink", False),
    ({"check": "n_items", "n": 2}, "cow, pig", True),
    ({"check": "n_items", "n": 3}, "red, blue and green.", True),
    ({"check": "word_repeats", "word": "apple", "n": 3}, "apple Apple apple", True),
    ({"check": "word_repeats", "word": "apple", "n": 3}, "apple apple pineapple", False),
    ({"check": "starts_with", "prefix": "Sure"}, "  sure, a carrot.", True),
    ({"check": "starts_with", "prefix": "Sure"}, "Okay, sure.", False),
    ({"check": "choice", "answer": "B"}, "The answer is (B).", True),
    ({"check": "choice", "answer": "B"}, "B. Paris", True),
    ({"check": "choice", "answer": "C"}, "A good question. I think (C) is right.", True),
    ({"check": "choice", "answer": "A"}, "Answer: D", False),
    (
        {
            "check": "all",
            "of": [
                {"check": "word_count", "max_words": 1},
                {"check": "contains_any", "answers": ["no"]},
            ],
        },
        "No.",
        True,
    ),  # fmt: skip
    (
        {
            "check": "all",
            "of": [
                {"check": "word_count", "max_words": 1},
                {"check": "contains_any", "answers": ["no"]},
            ],
        },
        "No, it cannot.",
        False,
    ),  # fmt: skip
    (
        {
            "check": "any",
            "of": [
                {"check": "contains_any", "answers": ["eight"]},
                {"check": "number", "value": 8, "mode": "any"},
            ],
        },
        "It has 8 legs.",
        True,
    ),  # fmt: skip
]


@pytest.mark.parametrize(("spec", "output", "expected"), CASES)
def test_checkers(spec, output, expected):
    UtilityItem("x", "p", spec)  # every spec in the table is valid
    assert run_check(spec, output) is expected


def test_list_and_letter_helpers():
    assert count_items("Here:\n* a\n* b") == 2
    assert count_items("") == 0
    assert chosen_letter("A cat is an animal, so the answer is D") == "D"
    assert chosen_letter("no letter here") is None


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"check": "nope"}, "unknown checker"),
        ({"answers": ["x"]}, "unknown checker"),
        ({"check": "contains_any"}, "bad arguments"),
        ({"check": "contains_any", "answers": ["x"], "extra": 1}, "bad arguments"),
        ({"check": "number", "value": 1, "mode": "middle"}, "mode"),
        ({"check": "regex", "pattern": "("}, "bad regex"),
        ({"check": "all", "of": []}, "non-empty"),
        ({"check": "any", "of": [{"check": "nope"}]}, "unknown checker"),
    ],
)
def test_bad_specs_fail_at_construction(spec, fragment):
    with pytest.raises(CheckSpecError, match=fragment):
        UtilityItem("bad", "prompt", spec)


def test_builtin_set_loads_and_is_sized():
    items = load_utility_items()
    assert BUILTIN_UTILITY.exists() and 60 <= len(items) <= 100
    assert len({it.id for it in items}) == len(items)
    kinds = {it.spec["check"] for it in items}
    assert {"contains_any", "number", "uppercase", "n_items", "word_repeats"} <= kinds


def test_item_files_are_validated(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"items": [{"id": "a", "prompt": "p", "check": "nope"}]}))
    with pytest.raises(CheckSpecError, match="item 'a'"):
        load_utility_items(bad)
    dup = tmp_path / "dup.json"
    row = {"id": "a", "prompt": "p", "check": "uppercase"}
    dup.write_text(json.dumps({"items": [row, row]}))
    with pytest.raises(CheckSpecError, match="repeats"):
        load_utility_items(dup)
    with pytest.raises(CheckSpecError, match="expected a JSON"):
        load_utility_items(tmp_path / "missing.json")


# ---------------------------------------------------------------------------- benchmark loaders

MMLU_ROW = {
    "question": "Which gas do plants take in for photosynthesis?",
    "subject": "biology",
    "choices": ["Oxygen", "Carbon dioxide", "Nitrogen", "Helium"],
    "answer": 1,
    "input_formatted": "The following are questions.\n\nWhich gas ...?\nA. Oxygen\nAnswer:",
}
GSM_ROW = {
    "question": "Sam buys 3 packs of 12 eggs and breaks 4. How many eggs are left?",
    "answer": "3 packs hold 3 * 12 = <<3*12=36>>36 eggs.\n36 - 4 = <<36-4=32>>32\n#### 1,032",
    "input_formatted": "Question: ...\nAnswer:",
}


def test_mmlu_mapping():
    item = mmlu_item(MMLU_ROW, 3)
    assert item.id == "tinyMMLU-3" and item.source == "tinyMMLU"
    assert "B. Carbon dioxide" in item.prompt and item.spec["answer"] == "B"
    assert item.is_correct("The answer is B.") and not item.is_correct("A. Oxygen")
    assert mmlu_item({**MMLU_ROW, "answer": "c"}, 0).spec["answer"] == "C"
    assert mmlu_item(MMLU_ROW, 0, few_shot=True).prompt == MMLU_ROW["input_formatted"]
    with pytest.raises(CheckSpecError, match="not one of"):
        mmlu_item({**MMLU_ROW, "answer": 7}, 0)


def test_gsm8k_mapping():
    item = gsm8k_item(GSM_ROW, 0)
    assert item.spec == {"check": "number", "value": 1032.0, "mode": "last"}
    assert item.is_correct("... so 1032 eggs") and not item.is_correct("1032 eggs, minus 4")
    assert gsm8k_item(GSM_ROW, 0, few_shot=True).prompt == GSM_ROW["input_formatted"]
    with pytest.raises(CheckSpecError, match="####"):
        gsm8k_item({**GSM_ROW, "answer": "32"}, 0)


@pytest.mark.parametrize("loader", [load_tiny_mmlu, load_tiny_gsm8k])
def test_loaders_offline_error_names_the_fix(loader, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchmarkUnavailableError, match="HF_HUB_OFFLINE=1") as err:
        loader(cache_dir=tmp_path)  # an empty cache: nothing to fall back on
    assert "load_utility_items()" in str(err.value) and "go online" in str(err.value)


# ---------------------------------------------------------------------------- KL damage


def _vector(tiny, norm: float, positions: str) -> SteeringVector:
    v = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(1))
    return SteeringVector(v / v.norm(), layer=1, positions=positions, alpha=norm)


def test_kl_of_zero_vector_is_exactly_zero(tiny):
    for spec in ("all", "f2+l2"):
        result = kl_damage(tiny, SteeringVector.zeros(tiny.d_model, layer=1, positions=spec), PROMPTS, CFG)  # fmt: skip
        assert result.mean == 0.0 and all(x == 0.0 for x in result.per_prompt)
        assert result.n_tokens > 0 and len(result.per_prompt) == len(PROMPTS)


def test_kl_grows_with_the_vector_and_both_kinds_run(tiny):
    small = kl_damage(tiny, _vector(tiny, 2.0, "all"), PROMPTS, CFG)
    fssv = kl_damage(tiny, _vector(tiny, 20.0, "all"), PROMPTS, CFG)
    prosv = kl_damage(tiny, _vector(tiny, 20.0, "f2+l2"), PROMPTS, CFG)
    assert fssv.mean > 0.1 and prosv.mean > 0.0
    assert fssv.mean > small.mean > 0.0
    assert fssv.estimate.low <= fssv.mean <= fssv.estimate.high
    # The same unsteered continuations are measured whatever the vector.
    assert fssv.n_tokens == prosv.n_tokens == small.n_tokens
    assert fssv.to_dict()["estimate"]["n"] == len(PROMPTS)


def test_kl_per_prompt_does_not_depend_on_batching(tiny):
    iv = _vector(tiny, 5.0, "all")
    batched = kl_damage(tiny, iv, PROMPTS, KLConfig(max_new_tokens=6, batch_size=3))
    alone = [kl_damage(tiny, iv, [p], KLConfig(max_new_tokens=6)).mean for p in PROMPTS]
    assert batched.per_prompt == pytest.approx(alone, rel=1e-4, abs=1e-6)


def test_continuation_positions(tiny):
    gen = generate(tiny, encode_prompts(tiny, PROMPTS), (), GenerationConfig(max_new_tokens=5))
    batch = continuation_batch(gen.prompt, gen.tokens, gen.lengths)
    where = predicting_mask(batch)
    assert where.sum(dim=1).tolist() == list(gen.lengths)  # one position per generated token
    width = gen.prompt.n_pos
    assert bool(where[:, width - 1].all())  # the last prompt token predicts the first new one
    assert batch.prompt_mask[:, :width].equal(gen.prompt.prompt_mask)
    assert not bool(batch.prompt_mask[:, width:].any())


# ---------------------------------------------------------------------------- evaluate_utility


def test_evaluate_utility_mechanics(tiny):
    items = [
        UtilityItem("any-text", "Say something.", {"check": "regex", "pattern": "."}),
        UtilityItem("impossible", "Say 42.", {"check": "regex", "pattern": "^IMPOSSIBLE$"}),
        UtilityItem(
            "long-prompt", "Tell me about the sea, please. " * 3, {"check": "regex", "pattern": "."}
        ),  # fmt: skip
    ]
    cfg = UtilityConfig(max_new_tokens=4, batch_size=2)
    result = evaluate_utility(tiny, None, items, cfg)
    assert [r.id for r in result.rows] == [it.id for it in items]  # input order kept
    assert [r.correct for r in result.rows] == [it.is_correct(r.output) for it, r in zip(items, result.rows, strict=True)]  # fmt: skip
    assert result.rows[1].correct is False
    assert (
        result.accuracy.n == 3 and result.accuracy.mean == sum(r.correct for r in result.rows) / 3
    )
    alone = evaluate_utility(tiny, None, items[2:], cfg)
    assert alone.rows[0].output == result.rows[2].output  # batching does not change answers
    steered = evaluate_utility(tiny, _vector(tiny, 50.0, "all"), items, cfg)
    assert [r.output for r in steered.rows] != [r.output for r in result.rows]
    assert json.loads(json.dumps(result.to_dict()))["accuracy"]["n"] == 3


def test_evaluate_utility_rejects_no_items(tiny):
    with pytest.raises(ValueError, match="at least one item"):
        evaluate_utility(tiny, None, [])


# ---------------------------------------------------------------------------- suppression prompts

INSTRUCTIONS = ["Write a poem about the sea.", "Explain how a bicycle works.", "List three fruits."]
CONCEPT = "references to cooking and recipes"


def test_suppression_prompts_are_deterministic_and_keep_the_instruction():
    first = suppression_prompts(INSTRUCTIONS, CONCEPT, seed=3)
    assert first == suppression_prompts(INSTRUCTIONS, CONCEPT, seed=3)
    for sp, instruction in zip(first, INSTRUCTIONS, strict=True):
        assert sp.instruction == instruction and instruction in sp.prompt and CONCEPT in sp.prompt
        assert sp.prompt != instruction
        item = sp.judge_item("Some response.")
        assert item.instruction == instruction and item.concept == CONCEPT
    many = [f"Instruction number {i}." for i in range(40)]
    used = {sp.template for sp in suppression_prompts(many, CONCEPT, seed=0)}
    assert used == set(range(len(SUPPRESSION_TEMPLATES)))  # every phrasing gets used
    assert [sp.template for sp in suppression_prompts(many, CONCEPT, seed=1)] != [
        sp.template for sp in suppression_prompts(many, CONCEPT, seed=0)
    ]


def test_suppression_prompts_reject_bad_input():
    from prosv_lens.errors import PromptError

    for args in (([], CONCEPT), (INSTRUCTIONS, "  "), (["ok", " "], CONCEPT)):
        with pytest.raises(PromptError):
            suppression_prompts(*args)


def test_kl_of_prompt_steering_compares_the_same_continuation(tiny):
    same = kl_damage(tiny, None, PROMPTS, CFG, steered_prompts=PROMPTS)
    assert same.mean == 0.0  # the same prompts: nothing changes
    prompted = kl_damage(
        tiny, None, PROMPTS, CFG, steered_prompts=[f"Talk about apples. {p}" for p in PROMPTS]
    )
    assert prompted.mean > 0.0 and prompted.n_tokens == same.n_tokens
    with pytest.raises(ValueError, match="steered prompts"):
        kl_damage(tiny, None, PROMPTS, CFG, steered_prompts=PROMPTS[:1])


def test_utility_and_kl_give_the_same_answers_on_either_generation_backend(tiny):
    """``auto`` picks Hugging Face ``generate`` on a GPU: greedy answers and KL equal the bridge's."""
    items = [
        UtilityItem("a", "Say something.", {"check": "regex", "pattern": "."}),
        UtilityItem("b", "Tell me about the sea, please. " * 2, {"check": "regex", "pattern": "."}),
    ]
    vec = _vector(tiny, 50.0, "f2+l2")
    runs = {
        backend: evaluate_utility(tiny, vec, items, UtilityConfig(max_new_tokens=6, batch_size=2,
                                                                  backend=backend))
        for backend in ("bridge", "hf")
    }  # fmt: skip
    assert [r.output for r in runs["hf"].rows] == [r.output for r in runs["bridge"].rows]
    kls = {
        backend: kl_damage(tiny, vec, ["Hi", "Name a color."],
                           KLConfig(max_new_tokens=4, backend=backend)).estimate.mean
        for backend in ("bridge", "hf")
    }  # fmt: skip
    assert kls["hf"] == pytest.approx(kls["bridge"], rel=1e-5) and kls["bridge"] > 0
