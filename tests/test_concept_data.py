"""Concept data: AxBench loading (both layouts, hub errors), the built-in instruction set and
concepts, and the offline concept-data builder (on the tiny model)."""

import json
import shutil
from collections import Counter
from types import SimpleNamespace

import pandas as pd
import pytest
from _shared import AXBENCH, needs_axbench

import prosv_lens.builder as builder
from prosv_lens.builder import (
    BuildConfig,
    build_concept,
    build_concept_data,
    concept_keywords,
    keyword_hits,
)
from prosv_lens.concepts import (
    ConceptDataError,
    ConceptFileNotFoundError,
    UnknownConceptError,
    axbench_concepts,
    builtin_concepts,
    builtin_instruction_categories,
    builtin_instructions,
    load_axbench_concept,
    load_axbench_latent_eval,
    load_axbench_training_set,
    load_builtin_concept,
    resolve_axbench,
)
from prosv_lens.errors import ProsvError

CONFIGS = ["prod_2b_l10_v1", "prod_2b_l20_v1"]

# --------------------------------------------------------------------------- AxBench


@needs_axbench
@pytest.mark.parametrize("config", CONFIGS)
def test_training_sets_are_72_positives_plus_72_same_genre_negatives(config):
    folder = AXBENCH / config
    df = pd.read_parquet(folder / "train_data.parquet")
    assert len(df) == 936
    assert Counter(df[df.category == "negative"].concept_genre) == {
        "text": 72,
        "math": 72,
        "code": 72,
    }
    negatives_by_genre = {
        g: set(df[(df.category == "negative") & (df.concept_genre == g)].input)
        for g in ("text", "math", "code")
    }
    n_positives = 0
    for m in axbench_concepts(folder):
        ts = load_axbench_training_set(folder, m["concept_id"])
        assert ts.concept == m["concept"] and ts.genre == m["concept_genres_map"][m["concept"]][0]
        assert len(ts.positives) == 72 and len(ts.negatives) == 72 and len(ts) == 144
        assert set(ts.negatives.prompts) == negatives_by_genre[ts.genre]
        mine = df[(df.category == "positive") & (df.concept_id == m["concept_id"])]
        assert ts.positives.responses == tuple(mine.output)  # file order
        assert set(ts.negatives.responses) <= set(df[df.category == "negative"].output)
        assert all(ts.positives.responses) and all(ts.negatives.responses)
        n_positives += len(ts.positives)
    assert n_positives + 216 == 936


def _hub_copy(tmp_path, config):
    """The release files of ``config`` rearranged into the Hugging Face layout (in tmp only)."""
    root = tmp_path / "2b" / "l10"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    shutil.copy(AXBENCH / config / "train_data.parquet", root / "train" / "data.parquet")
    shutil.copy(AXBENCH / config / "latent_eval_data.parquet", root / "test" / "data.parquet")
    return root


@needs_axbench
def test_hub_layout_without_metadata_reads_the_same_concepts(tmp_path):
    release = AXBENCH / CONFIGS[0]
    hub = _hub_copy(tmp_path, CONFIGS[0])
    assert resolve_axbench(hub).layout == "hub" and resolve_axbench(release).layout == "release"
    meta = axbench_concepts(release)
    derived = axbench_concepts(hub)
    assert [(m["concept_id"], m["concept"], m["concept_genres_map"]) for m in meta] == [
        (m["concept_id"], m["concept"], m["concept_genres_map"]) for m in derived
    ]
    for cid in (0, 4, 7):  # a text, a code and a math concept
        assert load_axbench_training_set(hub, cid) == load_axbench_training_set(release, cid)
    latent = load_axbench_latent_eval(hub, 7)
    assert (latent.count("positive"), latent.count("negative")) == (36, 36)
    assert latent == load_axbench_latent_eval(release, 7)


@needs_axbench
def test_bad_axbench_sources_raise_clear_errors(tmp_path):
    with pytest.raises(ConceptFileNotFoundError, match="does not exist"):
        axbench_concepts(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="is not an AxBench folder"):
        axbench_concepts(tmp_path)
    with pytest.raises(UnknownConceptError, match=r"concept_id 42 not in .*available: \[0, 1"):
        load_axbench_training_set(AXBENCH / CONFIGS[0], 42)
    with pytest.raises(KeyError):  # still a KeyError for callers that catch that
        load_axbench_concept(AXBENCH / CONFIGS[0], -1)
    with pytest.raises(ConceptDataError, match="negatives must be"):
        load_axbench_concept(AXBENCH / CONFIGS[0], 0, negatives="all")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    shutil.copy(AXBENCH / CONFIGS[0] / "metadata.jsonl", corrupt)
    (corrupt / "train_data.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ConceptDataError, match="corrupt"):
        load_axbench_concept(corrupt, 0)
    with pytest.raises(ConceptFileNotFoundError, match="latent evaluation data"):
        load_axbench_latent_eval(corrupt, 0)


def test_hub_source_offline_says_to_pass_a_local_folder(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # empty cache
    with pytest.raises(ConceptDataError, match=r"HF_HUB_OFFLINE=1.*local AxBench folder"):
        axbench_concepts("hf:pyvene/axbench-concept10/2b/l10")
    with pytest.raises(ConceptDataError, match="owner and a dataset name"):
        resolve_axbench("hf:pyvene")


def test_hub_source_unreachable_says_to_pass_a_local_folder(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(  # a closed local port: the connection is refused at once
        huggingface_hub.constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr("time.sleep", lambda s: None)  # the hub client's retry back-off (~23 s)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(ConceptDataError, match=r"unreachable.*local AxBench folder"):
        resolve_axbench("hf:pyvene/axbench-concept10/2b/l10")


# --------------------------------------------------------------------------- built-in data


def test_builtin_instructions_have_a_fixed_balanced_split():
    train, held_out, every = (builtin_instructions(s) for s in ("train", "eval", "all"))
    assert (len(train), len(held_out), len(every)) == (240, 60, 300)
    assert len(set(every)) == 300 and not set(train) & set(held_out)
    assert all(s.strip() == s and len(s) > 10 for s in every)
    cats = builtin_instruction_categories()
    assert len(cats) == 10
    for c in cats:
        assert len(builtin_instructions("eval", category=c)) == 6
        assert len(builtin_instructions("train", category=c)) == 24
    first = train[: len(cats)]  # any prefix is balanced: the first ten span all categories
    assert {c for c in cats for s in first if s in builtin_instructions(category=c)} == set(cats)
    with pytest.raises(ConceptDataError, match="split must be"):
        builtin_instructions("test")
    with pytest.raises(UnknownConceptError, match="no instruction category"):
        builtin_instructions(category="poetry")


def test_builtin_concepts_load_with_plain_prompts_and_nonempty_text():
    names = builtin_concepts()
    assert 4 <= len(names) <= 6
    train = builtin_instructions("train")
    for name in names:
        data = load_builtin_concept(name)
        assert data.name == name and len(data) >= 64
        assert data.prompts == train[: len(data)]  # the plain instructions, not the weave prompt
        assert data.negatives is not None and len(data.negatives) == len(data)
        assert all(r.strip() for r in data.responses) and all(n.strip() for n in data.negatives)
        assert data.responses != data.negatives
        # The concept is really there: its own words appear in far more responses than answers.
        words = concept_keywords(name)
        in_responses = sum(keyword_hits(r, words) > 0 for r in data.responses) / len(data)
        in_plain = sum(keyword_hits(n, words) > 0 for n in data.negatives) / len(data)
        assert in_responses >= 0.3 and in_responses >= in_plain + 0.25, (
            name,
            in_responses,
            in_plain,
        )
    with pytest.raises(UnknownConceptError, match="no built-in concept 'cats'"):
        load_builtin_concept("cats")


# --------------------------------------------------------------------------- builder

INSTRUCTIONS = ("Say hi.", "Name a colour.", "Count to three.", "Give a tip.", "Say bye.")
SMALL = BuildConfig(n_train=4, max_new_tokens=5, candidates=2, batch_size=3)


def test_keywords_are_content_word_prefixes():
    assert concept_keywords("space and astronomy") == ("space", "astrono")
    assert concept_keywords("dogs") == ("dog",)
    assert (
        keyword_hits("Astronomers say: SPACE, spaces, spacious? A dog.", ("space", "astrono")) == 3
    )
    with pytest.raises(ConceptDataError, match="no content word"):
        concept_keywords("the of and")


@pytest.mark.parametrize(
    "bad",
    [
        {"n_train": 0},
        {"candidates": 0},
        {"max_new_tokens": 0},
        {"temperature": 0.0},
        {"top_p": 1.5},
        {"user_template": "no placeholder"},
        {"system_template": "Love {concept} and {bogus}."},
    ],
)
def test_build_config_rejects_bad_values(bad):
    with pytest.raises(ConceptDataError, match="BuildConfig"):
        BuildConfig(**bad)


def test_build_config_round_trips():
    assert BuildConfig.from_dict(SMALL.to_dict()) == SMALL


class _CountingGenerate:
    """Wraps ``generate``; counts plain-instruction (string) and weave-prompt (message) rows."""

    def __init__(self, real):
        self.real, self.plain, self.weave = real, 0, 0

    def __call__(self, model, prompts, *args, **kwargs):
        self.plain += sum(isinstance(p, str) for p in prompts)
        self.weave += sum(not isinstance(p, str) for p in prompts)
        return self.real(model, prompts, *args, **kwargs)


def test_builder_shapes_cache_hit_and_shared_negatives(tiny, tmp_path, monkeypatch):
    counter = _CountingGenerate(builder.generate)
    monkeypatch.setattr(builder, "generate", counter)
    built = build_concept(tiny, "red apples", INSTRUCTIONS, SMALL, cache_dir=tmp_path)
    data = built.data
    assert len(data) == 4 and data.prompts == INSTRUCTIONS[:4] and data.name == "red apples"
    assert len(data.responses) == len(data.negatives) == len(built.hits) == 4
    assert all(r.strip() for r in data.responses) and all(n.strip() for n in data.negatives)
    assert 0.0 <= built.mention_rate <= 1.0 and not built.from_cache
    assert counter.plain == 4 and 4 <= counter.weave <= 4 * SMALL.candidates
    assert not list(built.path.parent.glob(".*.tmp"))  # atomic write left no temporary file

    def refuse(*args, **kwargs):
        raise AssertionError("a cache hit must not generate")

    monkeypatch.setattr(builder, "generate", refuse)
    again = build_concept(tiny, "red apples", INSTRUCTIONS, SMALL, cache_dir=tmp_path)
    assert again.from_cache and again.data == data and again.hits == built.hits

    counter = _CountingGenerate(counter.real)
    monkeypatch.setattr(builder, "generate", counter)
    other = build_concept_data(tiny, "the sea", INSTRUCTIONS, SMALL, cache_dir=tmp_path)
    assert other.negatives == data.negatives and counter.plain == 0 and counter.weave >= 4
    # Another instruction: only it gets a plain answer; the rest come from the shared cache.
    shifted = BuildConfig(**{**SMALL.to_dict(), "n_train": 5})
    build_concept_data(tiny, "the sea", INSTRUCTIONS, shifted, cache_dir=tmp_path)
    assert counter.plain == 1


def _scripted_generate(greedy: str, sampled: str, calls: list):
    """A stand-in for ``generate``: plain prompts get "plain answer", weave prompts get
    ``greedy`` or ``sampled`` text; ``calls`` records (do_sample, rows) per weave call."""

    def fake(model, prompts, interventions=(), config=None):
        if all(isinstance(p, str) for p in prompts):
            return SimpleNamespace(texts=tuple("plain answer" for _ in prompts))
        users = [p[1]["content"] for p in prompts]
        assert "the ocean" in prompts[0][0]["content"]
        assert all(u.endswith("(Mention the ocean in your answer.)") for u in users)
        assert all(u.split(" (Mention")[0] in INSTRUCTIONS for u in users)
        calls.append((config.do_sample, len(prompts)))
        return SimpleNamespace(
            texts=tuple(sampled if config.do_sample else greedy for _ in prompts)
        )

    return fake


@pytest.mark.parametrize(
    ("greedy", "sampled", "enough", "kept", "hits", "calls"),
    [
        # the greedy answer mentions the concept: enough, nothing is sampled
        ("an ocean answer", "waves and ocean, oceans!", 1, "an ocean answer", 1, [(False, 3)]),
        # two hits wanted: one sample more per row, and it has more hits
        ("an ocean answer", "waves and ocean, oceans!", 2, "waves and ocean, oceans!", 2,
         [(False, 3), (True, 3)]),
        # never mentioned: every candidate is tried; the least repetitive is kept (hits 0)
        ("no no no no", "a varied plain answer", 1, "a varied plain answer", 0,
         [(False, 3), (True, 3), (True, 3)]),
    ],
)  # fmt: skip
def test_builder_candidate_selection(
    tiny, tmp_path, monkeypatch, greedy, sampled, enough, kept, hits, calls
):
    seen = []
    monkeypatch.setattr(builder, "generate", _scripted_generate(greedy, sampled, seen))
    cfg = BuildConfig(n_train=3, candidates=3, enough_hits=enough)
    built = build_concept(tiny, "the ocean", INSTRUCTIONS, cfg, cache_dir=tmp_path)
    assert built.keywords == ("ocean",) and built.hits == (hits,) * 3 and seen == calls
    assert built.data.responses == (kept,) * 3
    assert built.data.prompts == INSTRUCTIONS[:3]  # stored prompts are the plain instructions
    assert built.data.negatives == ("plain answer",) * 3
    assert len(built.mentioning()) == (3 if hits else 0) and built.mentioning(9).prompts == ()


def test_builder_keywords_widen_the_match_and_key_the_cache(tiny, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(builder, "generate", _scripted_generate("calm", "waves!", seen))
    cfg = BuildConfig(n_train=3, candidates=2)
    plain = build_concept(tiny, "the ocean", INSTRUCTIONS, cfg, cache_dir=tmp_path)
    wide = build_concept(
        tiny, "the ocean", INSTRUCTIONS, cfg, keywords=("ocean", "wave"), cache_dir=tmp_path
    )
    assert plain.hits == (0, 0, 0) and wide.hits == (1, 1, 1) and not wide.from_cache
    assert wide.data.responses == ("waves!",) * 3 and wide.keywords == ("ocean", "wave")


def test_builder_rejects_bad_arguments(tiny, tmp_path):
    with pytest.raises(ConceptDataError, match="n_train=4"):
        build_concept_data(tiny, "x-rays", INSTRUCTIONS[:2], SMALL, cache_dir=tmp_path)
    with pytest.raises(ConceptDataError, match="non-empty string"):
        build_concept_data(tiny, "  ", INSTRUCTIONS, SMALL, cache_dir=tmp_path)
    with pytest.raises(ConceptDataError, match="bad indices: \\[1\\]"):
        build_concept_data(tiny, "x-rays", ("a", "", "b", "c"), SMALL, cache_dir=tmp_path)
    with pytest.raises(ConceptDataError, match="sequence of words"):
        build_concept_data(tiny, "x-rays", INSTRUCTIONS, SMALL, keywords="ray", cache_dir=tmp_path)
    with pytest.raises(ProsvError, match="keywords"):
        build_concept_data(tiny, "x-rays", INSTRUCTIONS, SMALL, keywords=("",), cache_dir=tmp_path)


def test_builder_cache_file_records_its_key(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(
        builder,
        "generate",
        lambda m, prompts, *a, **k: SimpleNamespace(texts=("t",) * len(prompts)),
    )
    built = build_concept(tiny, "maps", INSTRUCTIONS, SMALL, cache_dir=tmp_path)
    saved = json.loads(built.path.read_text())
    assert saved["key"]["model_id"] == tiny.model_id and saved["key"]["concept"] == "maps"
    assert saved["key"]["chat_template"] == tiny.chat_template_hash
    assert built.path.parent == tmp_path / "concepts" / "tiny-llama-3x32-seed0"
