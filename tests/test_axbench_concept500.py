"""AxBench Concept500: the repository layout (generate/ + inference/), ``axbench-repo:`` sources,
metadata-only folders, concept id lists and work-unit blocks.

A synthetic Concept500 folder (500 concepts' metadata in the real schema, a few concepts' rows)
is built in tmp; the real Concept10 folders in ../shared/data are rearranged into the repository
layout (symlinks in tmp) when present.
"""

import json
import os

import pandas as pd
import pytest
from _shared import AXBENCH, needs_axbench

from prosv_lens.concepts import (
    AxBenchFolder,
    ConceptDataError,
    ConceptFileNotFoundError,
    UnknownConceptError,
    axbench_concept_ids,
    axbench_concepts,
    concept_blocks,
    load_axbench_concept,
    load_axbench_latent_eval,
    load_axbench_training_set,
    resolve_axbench,
)
from prosv_lens.errors import ConfigError

GENRES = ("text", "code", "math")
N_CONCEPTS = 500
WITH_ROWS = (0, 1, 2, 499)  # concepts that have training / latent rows in the synthetic parquet
N_POS = 4


def _concept(cid: int) -> str:
    return f"synthetic concept number {cid}"


def _genre(cid: int) -> str:
    return GENRES[cid % 3]


def _write_concept500(folder, *, parquet=True):
    """A Concept500-layout configuration folder: generate/{metadata.jsonl, train_data.parquet},
    inference/latent_eval_data.parquet (the parquet files only when ``parquet``)."""
    (folder / "generate").mkdir(parents=True)
    (folder / "inference").mkdir()
    with (folder / "generate" / "metadata.jsonl").open("w") as f:
        for cid in range(N_CONCEPTS):
            row = {
                "concept_id": cid,
                "concept": _concept(cid),
                "ref": f"https://www.neuronpedia.org/gemma-2-2b/10-gemmascope-res-16k/{7000 + cid}",
                "concept_genres_map": {_concept(cid): [_genre(cid)]},
            }
            f.write(json.dumps(row) + "\n")
    if not parquet:
        return folder
    rows = [
        {
            "input": f"{genre} instruction {j}",
            "output": f"plain {genre} answer {j}",
            "output_concept": "EEEEE",
            "concept_genre": genre,
            "category": "negative",
            "dataset_category": "instruction",
            "concept_id": -1,
        }
        for genre in GENRES
        for j in range(N_POS)
    ]
    rows += [
        {
            "input": f"instruction {j} for {cid}",
            "output": f"answer {j} weaving in {_concept(cid)}",
            "output_concept": _concept(cid),
            "concept_genre": _genre(cid),
            "category": "positive",
            "dataset_category": "instruction",
            "concept_id": cid,
        }
        for cid in WITH_ROWS
        for j in range(N_POS)
    ]
    pd.DataFrame(rows).to_parquet(folder / "generate" / "train_data.parquet")
    latent = [
        {
            "input": f"held-out {label} {cid}",
            "output": f"held-out answer {label} {cid}",
            "output_concept": _concept(cid),
            "concept_genre": _genre(cid),
            "category": label,
            "dataset_category": "instruction",
            "concept_id": cid,
            "sae_link": f"https://www.neuronpedia.org/gemma-2-2b/10-gemmascope-res-16k/{7000 + cid}",
            "sae_id": 7000 + cid,
        }
        for cid in WITH_ROWS
        for label in ("positive", "positive", "negative", "hard negative")
    ]
    pd.DataFrame(latent).to_parquet(folder / "inference" / "latent_eval_data.parquet")
    return folder


@pytest.fixture
def clone(tmp_path):
    """A fake AxBench clone: <clone>/axbench/concept500/prod_2b_l10_v1 (complete) and
    prod_9b_l31_v1 (metadata only)."""
    sets = tmp_path / "axbench-clone" / "axbench" / "concept500"
    _write_concept500(sets / "prod_2b_l10_v1")
    _write_concept500(sets / "prod_9b_l31_v1", parquet=False)
    return tmp_path / "axbench-clone"


@pytest.fixture
def c500(clone):
    return clone / "axbench" / "concept500" / "prod_2b_l10_v1"


@pytest.fixture
def meta_only(clone):
    return clone / "axbench" / "concept500" / "prod_9b_l31_v1"


# ------------------------------------------------------------------- the repository layout


def test_repo_layout_resolves_and_lists_500_concepts(c500):
    src = resolve_axbench(c500)
    assert src == AxBenchFolder(c500, "repo")
    assert src.metadata_file == c500 / "generate" / "metadata.jsonl"
    assert src.train_file == c500 / "generate" / "train_data.parquet"
    assert src.latent_file == c500 / "inference" / "latent_eval_data.parquet"
    concepts = axbench_concepts(c500)
    assert [m["concept_id"] for m in concepts] == list(range(N_CONCEPTS))
    assert concepts[123]["concept"] == _concept(123)
    assert concepts[123]["ref"].endswith("/7123")
    # a string source reads the same
    assert axbench_concepts(str(c500)) == concepts


def test_repo_layout_loads_training_set_and_latent_rows(c500):
    for cid in WITH_ROWS:
        ts = load_axbench_training_set(c500, cid)
        assert (ts.concept, ts.genre) == (_concept(cid), _genre(cid))
        assert ts.positives.prompts == tuple(f"instruction {j} for {cid}" for j in range(N_POS))
        assert ts.negatives.prompts == tuple(f"{_genre(cid)} instruction {j}" for j in range(N_POS))
    latent = load_axbench_latent_eval(c500, 499)
    assert latent.concept == _concept(499)
    assert latent.labels == ("positive", "positive", "negative", "hard negative")
    # a concept in the metadata without rows: an empty training set, not someone else's rows
    assert len(load_axbench_concept(c500, 7)) == 0
    with pytest.raises(UnknownConceptError, match="concept_id 500 not in"):
        load_axbench_concept(c500, 500)


def test_axbench_repo_source_names_the_configuration(clone, c500):
    for spec in (
        f"axbench-repo:{clone}:concept500/2b_l10",
        f"axbench-repo:{clone}:concept500/prod_2b_l10_v1",
        f"axbench-repo:{clone / 'axbench'}:concept500/2b_l10",  # the inner package folder
    ):
        assert resolve_axbench(spec) == AxBenchFolder(c500, "repo"), spec
    assert axbench_concept_ids(f"axbench-repo:{clone}:concept500/2b_l10", first=3) == (0, 1, 2)


def test_axbench_repo_source_errors_name_the_fix(clone, tmp_path):
    with pytest.raises(ConceptDataError, match=r"axbench-repo:<clone>:<set>/<config>"):
        resolve_axbench(f"axbench-repo:{clone}")
    with pytest.raises(ConceptDataError, match=r"axbench-repo:<clone>:<set>/<config>"):
        resolve_axbench(f"axbench-repo:{clone}:concept500")
    with pytest.raises(ConceptFileNotFoundError, match="git clone https://github.com/stanfordnlp"):
        resolve_axbench(f"axbench-repo:{tmp_path / 'nowhere'}:concept500/2b_l10")
    with pytest.raises(ConceptFileNotFoundError, match=r"no data set 'concept16k'.*'concept500'"):
        resolve_axbench(f"axbench-repo:{clone}:concept16k/2b_l10")
    with pytest.raises(
        ConceptFileNotFoundError, match=r"no configuration '2b_l99'.*'2b_l10', '9b_l31'"
    ):
        resolve_axbench(f"axbench-repo:{clone}:concept500/2b_l99")


def test_parent_folder_error_lists_its_configurations(clone):
    with pytest.raises(
        ConceptFileNotFoundError, match=r"prod_2b_l10_v1', 'prod_9b_l31_v1'.*pass one"
    ):
        axbench_concepts(clone / "axbench" / "concept500")


# ------------------------------------------------------------------- metadata-only and broken data


def test_metadata_only_folder_lists_and_names_the_missing_file(meta_only):
    assert resolve_axbench(meta_only).layout == "repo"
    assert len(axbench_concepts(meta_only)) == N_CONCEPTS
    assert axbench_concept_ids(meta_only, first=500) == tuple(range(500))
    with pytest.raises(ConceptFileNotFoundError) as err:
        load_axbench_training_set(meta_only, 0)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(meta_only / "generate" / "train_data.parquet") in msg
    assert "git lfs pull" in msg and "full clone" in msg
    assert isinstance(err.value, ConceptDataError) and isinstance(err.value, FileNotFoundError)
    with pytest.raises(ConceptFileNotFoundError, match=r"inference/latent_eval_data\.parquet not"):
        load_axbench_latent_eval(meta_only, 0)


def test_flat_folder_with_metadata_only_lists_too(tmp_path, c500):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "metadata.jsonl").write_bytes((c500 / "generate" / "metadata.jsonl").read_bytes())
    assert resolve_axbench(flat).layout == "release"
    assert axbench_concept_ids(flat) == tuple(range(N_CONCEPTS))
    with pytest.raises(ConceptFileNotFoundError, match=r"flat/train_data\.parquet not found"):
        load_axbench_concept(flat, 3)


def test_lfs_pointer_is_named_as_such(c500):
    pointer = (
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 6123456\n"
    )
    (c500 / "generate" / "train_data.parquet").write_text(pointer)
    with pytest.raises(ConceptDataError) as err:
        load_axbench_concept(c500, 0)
    msg = str(err.value)
    assert "is a Git LFS pointer" in msg and "git lfs pull" in msg and "\n" not in msg
    assert not isinstance(err.value, FileNotFoundError)
    assert len(axbench_concepts(c500)) == N_CONCEPTS  # listing still works


def test_corrupt_parquet_raises_concept_data_error(c500):
    (c500 / "generate" / "train_data.parquet").write_bytes(b"PAR1 truncated garbage")
    with pytest.raises(
        ConceptDataError, match=r"train_data\.parquet is not a readable parquet file"
    ):
        load_axbench_training_set(c500, 1)


# ------------------------------------------------------------------- concept ids and blocks


def test_concept_ids_all_first_and_lists(c500):
    assert axbench_concept_ids(c500) == tuple(range(N_CONCEPTS))
    assert axbench_concept_ids(c500, first=10) == tuple(range(10))
    assert axbench_concept_ids(c500, first=1) == (0,)
    assert axbench_concept_ids(c500, ids=[499, 3, 0]) == (499, 3, 0)  # the order given


def test_concept_ids_are_sorted_even_if_metadata_is_not(tmp_path):
    folder = tmp_path / "shuffled"
    folder.mkdir()
    lines = [
        json.dumps({"concept_id": c, "concept": f"c{c}", "concept_genres_map": {f"c{c}": ["text"]}})
        for c in (5, 2, 9, 0)
    ]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    assert axbench_concept_ids(folder) == (0, 2, 5, 9)
    assert axbench_concept_ids(folder, first=2) == (0, 2)
    with pytest.raises(UnknownConceptError, match=r"unknown concept ids \[1\].*ids 0, 2, 5, 9\."):
        axbench_concept_ids(folder, ids=[1, 2])


def test_concept_ids_reject_unknown_and_bad_requests(c500):
    with pytest.raises(UnknownConceptError) as err:
        axbench_concept_ids(c500, ids=[1, 500, -2, 7])
    msg = str(err.value)
    assert "unknown concept ids [-2, 500]" in msg and "500 concepts, ids 0-499" in msg
    assert isinstance(err.value, ConceptDataError) and isinstance(err.value, KeyError)
    with pytest.raises(ConceptDataError, match=r"first=501 but .* holds only 500 concepts"):
        axbench_concept_ids(c500, first=501)
    for bad_first in (0, -1, True):  # non-ints: the tests' runtime type checker stops them
        with pytest.raises(ConfigError, match="first must be a whole number >= 1"):
            axbench_concept_ids(c500, first=bad_first)
    with pytest.raises(ConfigError, match="not both"):
        axbench_concept_ids(c500, first=3, ids=[1])
    with pytest.raises(ConfigError, match="ids is empty"):
        axbench_concept_ids(c500, ids=[])
    with pytest.raises(ConfigError, match=r"concept ids \[3\] more than once"):
        axbench_concept_ids(c500, ids=[3, 4, 3])
    with pytest.raises(ConfigError, match=r"whole numbers \(concept ids\), got True"):
        axbench_concept_ids(c500, ids=[1, True])


def test_concept_blocks():
    assert concept_blocks(range(10), 4) == ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9))
    assert concept_blocks([9, 2, 5], 1) == ((9,), (2,), (5,))
    assert concept_blocks([9, 2, 5], 50) == ((9, 2, 5),)
    assert concept_blocks([], 3) == ()
    for bad_k in (0, -2, True):
        with pytest.raises(ConfigError, match="block size k must be a whole number >= 1"):
            concept_blocks(range(5), bad_k)
    with pytest.raises(ConfigError, match=r"\[1\] more than once"):
        concept_blocks([1, 2, 1], 2)


def test_blocks_of_the_first_500_cover_them_once(c500):
    ids = axbench_concept_ids(c500, first=500)
    blocks = concept_blocks(ids, 48)
    assert len(blocks) == 11 and all(len(b) == 48 for b in blocks[:-1]) and len(blocks[-1]) == 20
    assert tuple(i for b in blocks for i in b) == ids


# ------------------------------------------------------------------- real Concept10 data


CONFIGS = ("prod_2b_l10_v1", "prod_2b_l20_v1")


def _as_repo_clone(tmp_path, config):
    """The shared flat Concept10 folder rearranged as <clone>/axbench/concept10/<config>/
    {generate,inference}/ with symlinks (nothing copied)."""
    flat = AXBENCH / config
    folder = tmp_path / "clone" / "axbench" / "concept10" / config
    (folder / "generate").mkdir(parents=True)
    (folder / "inference").mkdir()
    for sub, name in (
        ("generate", "metadata.jsonl"),
        ("generate", "train_data.parquet"),
        ("inference", "latent_eval_data.parquet"),
    ):
        os.symlink((flat / name).resolve(), folder / sub / name)
    return tmp_path / "clone", folder


@needs_axbench
@pytest.mark.parametrize("config", CONFIGS)
def test_real_concept10_in_the_repo_layout_reads_as_the_flat_copy(tmp_path, config):
    flat = AXBENCH / config
    clone, nested = _as_repo_clone(tmp_path, config)
    short = config.removeprefix("prod_").removesuffix("_v1")
    assert resolve_axbench(flat).layout == "release"
    assert resolve_axbench(nested).layout == "repo"
    assert resolve_axbench(f"axbench-repo:{clone}:concept10/{short}").root == nested
    assert axbench_concepts(nested) == axbench_concepts(flat)
    assert axbench_concept_ids(nested) == axbench_concept_ids(flat) == tuple(range(10))
    for cid in (0, 4, 9):
        ts = load_axbench_training_set(nested, cid)
        assert ts == load_axbench_training_set(flat, cid)
        assert len(ts.positives) == 72 and len(ts.negatives) == 72
    latent = load_axbench_latent_eval(nested, 3)
    assert (latent.count("positive"), latent.count("negative")) == (36, 36)
    assert latent == load_axbench_latent_eval(flat, 3)


@needs_axbench
def test_real_concept10_ids_and_blocks():
    folder = AXBENCH / CONFIGS[0]
    assert axbench_concept_ids(folder, first=10) == tuple(range(10))
    with pytest.raises(ConceptDataError, match=r"holds only 10 concepts \(ids 0-9\).*Concept500"):
        axbench_concept_ids(folder, first=500)
    with pytest.raises(UnknownConceptError, match=r"unknown concept ids \[10, 42\].*ids 0-9"):
        axbench_concept_ids(folder, ids=[0, 10, 42])
    assert concept_blocks(axbench_concept_ids(folder), 4) == (
        (0, 1, 2, 3),
        (4, 5, 6, 7),
        (8, 9),
    )
