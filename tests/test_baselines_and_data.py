import json

import pytest
import torch
from _shared import AXBENCH, needs_axbench

from prosv_lens.baselines import (
    AXBENCH_FACTORS,
    classic_sv_config,
    diffmean,
    factor_grid,
    prompt_steered,
    with_neutral_responses,
)
from prosv_lens.concepts import (
    ConceptData,
    axbench_concepts,
    load_axbench_concept,
    load_axbench_latent_eval,
    load_jsonl_concept,
)
from prosv_lens.interventions import SteeringVector
from prosv_lens.training import train

POS = ConceptData(
    "sea", ("Describe a beach.", "Say hi."), ("Waves and salty sea spray.", "Hi from the ocean!")
)
NEG = ConceptData("neutral", ("List two numbers.", "Say bye."), ("One and two.", "Bye."))


@needs_axbench
@pytest.mark.parametrize("config", ["prod_2b_l10_v1", "prod_2b_l20_v1"])
def test_axbench_loader_on_the_shared_files(config):
    folder = AXBENCH / config
    meta = axbench_concepts(folder)
    assert len(meta) == 10 and {m["concept_id"] for m in meta} == set(range(10))
    for m in meta[:3]:
        data = load_axbench_concept(folder, m["concept_id"])
        assert data.name == m["concept"] and len(data) == 72 and all(data.responses)
        genre = m["concept_genres_map"][m["concept"]][0]
        negatives = load_axbench_concept(folder, m["concept_id"], negatives="genre")
        assert len(negatives) == 72 and negatives.name.endswith("(negatives)"), genre
    with pytest.raises(KeyError, match="concept_id 99 not in"):
        load_axbench_concept(folder, 99)


@needs_axbench
@pytest.mark.parametrize(("config", "n_hard"), [("prod_2b_l10_v1", 50), ("prod_2b_l20_v1", 35)])
def test_axbench_latent_eval_loader_counts_and_genre_split(config, n_hard):
    folder = AXBENCH / config
    hard = []
    for cid in range(10):
        rows = load_axbench_latent_eval(folder, cid)
        assert rows.count("positive") == 36 and rows.count("negative") == 36
        negative_genres = [
            g for g, lab in zip(rows.genres, rows.labels, strict=True) if lab == "negative"
        ]
        assert sorted(negative_genres.count(g) for g in ("text", "code", "math")) == [5, 5, 26]
        hard.append(rows.count("hard negative"))
    assert sum(hard) == n_hard and max(hard) <= 9  # 770 / 755 rows in all
    assert rows.concept == axbench_concepts(folder)[9]["concept"]


def test_jsonl_loader_and_splits(tmp_path):
    path = tmp_path / "ocean.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"prompt": f"p{i}", "response": f"r{i}", "negative": f"n{i}"})
            for i in range(5)
        )
    )
    data = load_jsonl_concept(path)
    assert (
        data.name == "ocean"
        and len(data) == 5
        and data.negatives == tuple(f"n{i}" for i in range(5))
    )
    train_part, held = data.split(3)
    assert train_part.prompts == ("p0", "p1", "p2") and held.negatives == ("n3", "n4")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "x"}))
    with pytest.raises(ValueError, match=r"bad.jsonl:1: field 'response' is missing"):
        load_jsonl_concept(tmp_path / "bad.jsonl")


def test_diffmean_on_concept_data(tiny):
    a = diffmean(tiny, POS, NEG, layer=1)
    b = diffmean(tiny, NEG, POS, layer=1)
    assert abs(float(a.direction.norm()) - 1) < 1e-5 and torch.allclose(
        a.direction, -b.direction, atol=1e-5
    )


def test_classic_sv_is_direction_only_at_factor_one(tiny):
    cfg = classic_sv_config(1, epochs=1)
    assert (cfg.positions, cfg.variant, cfg.lr_v, cfg.batch_size) == ("all", "fixed_alpha", 0.01, 6)
    vec = train(tiny, POS, cfg, progress=False).vectors["sea"]
    assert float(vec.alpha) == 1.0


def test_factor_grid_and_prompt_baseline():
    sv = SteeringVector(torch.ones(4), layer=0, alpha=1.0, info={"method": "diffmean"})
    grid = factor_grid(sv, AXBENCH_FACTORS, unit=150.0)
    assert [float(g.alpha) for g in grid] == [pytest.approx(f * 150.0) for f in AXBENCH_FACTORS]
    assert grid[3].info == {
        "method": "diffmean",
        "factor": AXBENCH_FACTORS[3],
        "factor_unit": 150.0,
    }
    assert float(sv.alpha) == 1.0  # the original is untouched
    (p,) = prompt_steered(["How do I bake bread?"], "the ocean")
    assert p.startswith("You must answer the question with content related to the ocean")
    assert p.endswith("\n\nQuestion: How do I bake bread?")


def test_neutral_responses_come_from_the_model(tiny):
    data = with_neutral_responses(tiny, POS, max_new_tokens=3)
    assert (
        data.negatives is not None and len(data.negatives) == 2 and data.responses == POS.responses
    )
