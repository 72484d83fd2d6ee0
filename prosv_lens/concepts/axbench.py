"""AxBench data: the release and hub layouts, a concept's training set, latent-eval rows."""

import os
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from prosv_lens.concepts.data import (
    ConceptData,
    ConceptDataError,
    ConceptFileNotFoundError,
    UnknownConceptError,
)
from prosv_lens.safe_io import json_type, parse_jsonl_text, read_text_file

_HUB_PREFIX = "hf:"
_TRAIN_COLUMNS = ("input", "output", "concept_genre", "category", "concept_id")


@dataclass(frozen=True)
class AxBenchFolder:
    """A local AxBench configuration folder in one of the two layouts (see the module docs).

    Attributes:
        root: the folder.
        layout: ``"release"`` (metadata.jsonl + train_data.parquet) or ``"hub"``
            (train/data.parquet, test/data.parquet).
    """

    root: Path
    layout: str

    @property
    def train_file(self) -> Path:
        return self.root / (
            "train_data.parquet" if self.layout == "release" else "train/data.parquet"
        )

    @property
    def latent_file(self) -> Path:
        """Held-out labelled rows (``latent_eval_data.parquet`` / ``test/data.parquet``)."""
        name = "latent_eval_data.parquet" if self.layout == "release" else "test/data.parquet"
        return self.root / name


def resolve_axbench(source: "str | Path | AxBenchFolder") -> AxBenchFolder:
    """Find an AxBench configuration: a local folder, or ``hf:<owner>/<dataset>/<sub/folder>``.

    A hub source (e.g. ``hf:pyvene/axbench-concept10/2b/l10``, optionally ending in
    ``@<revision>``) is downloaded with ``huggingface_hub`` into the Hugging Face cache (once;
    later calls, also offline, read the cached files).

    Raises:
        ConceptFileNotFoundError: the folder does not exist or holds neither layout.
        ConceptDataError: the hub is disabled (``HF_HUB_OFFLINE=1``) or unreachable and the files
            are not cached, or the dataset has no such folder.
    """
    if isinstance(source, AxBenchFolder):
        return source
    if isinstance(source, str) and source.startswith(_HUB_PREFIX):
        return _download_axbench(source[len(_HUB_PREFIX) :])
    root = Path(source).expanduser()
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise ConceptFileNotFoundError(
            f"AxBench folder {root} {state}: pass a folder holding metadata.jsonl + "
            f"train_data.parquet (AxBench repository) or train/data.parquet (Hugging Face "
            f"release), or a hub source such as 'hf:pyvene/axbench-concept10/2b/l10'."
        )
    if (root / "train_data.parquet").exists() and (root / "metadata.jsonl").exists():
        return AxBenchFolder(root, "release")
    if (root / "train" / "data.parquet").exists():
        return AxBenchFolder(root, "hub")
    present = sorted(p.name for p in root.iterdir())[:10]
    raise ConceptFileNotFoundError(
        f"{root} is not an AxBench folder: it needs metadata.jsonl and train_data.parquet, or "
        f"train/data.parquet (found: {present}). For a Concept10 configuration point at e.g. "
        f".../axbench-concept10/prod_2b_l10_v1."
    )


def _download_axbench(spec: str) -> AxBenchFolder:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    spec, _, revision = spec.partition("@")
    parts = [p for p in spec.split("/") if p]
    if len(parts) < 2:
        raise ConceptDataError(
            f"hub source 'hf:{spec}' needs an owner and a dataset name, "
            f"e.g. 'hf:pyvene/axbench-concept10/2b/l10'."
        )
    repo_id, sub = "/".join(parts[:2]), "/".join(parts[2:])
    prefix = f"{sub}/" if sub else ""

    def fetch(split: str) -> Path:
        return Path(
            hf_hub_download(
                repo_id,
                f"{prefix}{split}/data.parquet",
                repo_type="dataset",
                revision=revision or None,
            )
        )

    try:
        train = fetch("train")
    except LocalEntryNotFoundError as e:  # offline or unreachable, and not cached
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        why = "the hub is disabled (HF_HUB_OFFLINE=1)" if offline else "the hub is unreachable"
        raise ConceptDataError(
            f"cannot fetch hf:{spec}: {why} and it is not in the Hugging Face cache. Pass a "
            f"local AxBench folder instead (metadata.jsonl + train_data.parquet, or "
            f"train/data.parquet), or retry with the hub reachable."
        ) from e
    except EntryNotFoundError as e:  # the hub answered: no such file
        raise ConceptDataError(
            f"the dataset {repo_id} has no {prefix}train/data.parquet: for "
            f"pyvene/axbench-concept10 use a folder such as 2b/l10, 2b/l20, 9b/l20 or 9b/l31."
        ) from e
    except (HfHubHTTPError, OSError) as e:
        raise ConceptDataError(
            f"cannot fetch hf:{spec} ({type(e).__name__}: {e}). Check the dataset id, or pass a "
            f"local AxBench folder instead."
        ) from e
    # Optional: the latent-eval rows; they land beside train/ in the same snapshot folder.
    with suppress(EntryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError):
        fetch("test")
    return AxBenchFolder(train.parent.parent, "hub")


@cache
def _read_parquet_cached(path: str, mtime_ns: int, columns: tuple[str, ...]):  # noqa: ARG001
    import pandas as pd
    import pyarrow as pa

    try:
        df = pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ConceptDataError(
            f"{path} is not a readable parquet file ({type(e).__name__}: {e}); it may be "
            f"truncated or corrupt: download it again."
        ) from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ConceptDataError(
            f"{path} lacks the AxBench columns {missing} (has {list(df.columns)}): "
            f"is this an AxBench train_data / latent_eval_data file?"
        )
    return df


def _read_parquet(path: Path, what: str):
    if not path.exists():
        raise ConceptFileNotFoundError(
            f"{path} not found: this AxBench folder has no {what}; download the configuration "
            f"again or point at a complete folder."
        )
    return _read_parquet_cached(str(path), path.stat().st_mtime_ns, _TRAIN_COLUMNS)


def axbench_concepts(folder: "str | Path | AxBenchFolder") -> list[dict]:
    """One dict per concept: ``concept_id``, ``concept``, ``concept_genres_map`` (and ``ref``).

    Read from ``metadata.jsonl`` in the release layout, or derived from the training parquet's
    positives (``concept_id``, ``output_concept``, ``concept_genre``) in the hub layout.
    """
    src = resolve_axbench(folder)
    if src.layout == "release":
        return _read_metadata(src.root / "metadata.jsonl")
    df = _read_parquet(src.train_file, "training data")
    if "output_concept" not in df.columns:
        raise ConceptDataError(f"{src.train_file} lacks the 'output_concept' column.")
    pos = df[df.category == "positive"].drop_duplicates("concept_id").sort_values("concept_id")
    return [
        {
            "concept_id": int(r.concept_id),
            "concept": r.output_concept,
            "concept_genres_map": {r.output_concept: [r.concept_genre]},
        }
        for r in pos.itertuples()
    ]


_METADATA_FIX = (
    'each line must be an AxBench concept like {"concept_id": 0, "concept": "...", '
    '"concept_genres_map": {"...": ["text"]}}: download the configuration again'
)


_METADATA_FIELDS = (
    ("concept_id", int, "a whole number"),
    ("concept", str, "a string"),
    ("concept_genres_map", dict, "an object"),
)


def _read_metadata(path: Path) -> list[dict]:
    """The rows of a release-layout ``metadata.jsonl``, each checked for the fields used here.

    Raises:
        ConceptDataError: ``FILE:LINE: ...`` naming the field, or an empty, unreadable or
            non-UTF-8 file.
    """
    text = read_text_file(
        path,
        what="an AxBench metadata.jsonl",
        error=ConceptDataError,
        missing=ConceptFileNotFoundError,
    )
    rows = parse_jsonl_text(text, path, fix=_METADATA_FIX, error=ConceptDataError)
    for line, row in rows:
        problem = _metadata_problem(row)
        if problem:
            raise ConceptDataError(f"{path}:{line}: {problem}: {_METADATA_FIX}")
    return [row for _, row in rows]


def _metadata_problem(row: object) -> str | None:
    """What is wrong with one metadata row (``None``: nothing)."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got the {json_type(row)}"
    for field, kind, name in _METADATA_FIELDS:
        if field not in row:
            return f"field {field!r} is missing"
        if not isinstance(row[field], kind) or isinstance(row[field], bool):
            return f"field {field!r} must be {name}, got the {json_type(row[field])}"
    genres = row["concept_genres_map"].get(row["concept"])
    if not isinstance(genres, list) or not genres or not isinstance(genres[0], str):
        return f"field 'concept_genres_map' has no list of genres for {row['concept']!r}"
    return None


def _concept_meta(src: AxBenchFolder, concept_id: int) -> tuple[str, str]:
    """(concept, genre) of ``concept_id``."""
    meta = {m["concept_id"]: m for m in axbench_concepts(src)}
    if concept_id not in meta:
        raise UnknownConceptError(
            f"concept_id {concept_id} not in {src.root}; available: {sorted(meta)}"
        )
    concept = meta[concept_id]["concept"]
    return concept, meta[concept_id]["concept_genres_map"][concept][0]


def load_axbench_concept(
    folder: "str | Path | AxBenchFolder", concept_id: int, *, negatives: str | None = None
) -> ConceptData:
    """Concept ``concept_id``'s 72 positives from the training parquet, in file order.

    Args:
        folder: an AxBench configuration (see :func:`resolve_axbench`).
        concept_id: the concept's id.
        negatives: ``"genre"`` returns instead the shared negatives of the concept's genre (other
            instructions answered by the target model) as a ConceptData named ``<concept> (negatives)``.

    Raises:
        UnknownConceptError: ``concept_id`` is not in the folder (also a ``KeyError``).
        ConceptFileNotFoundError / ConceptDataError: missing or corrupt files.
    """
    if negatives not in (None, "genre"):
        raise ConceptDataError(f"negatives must be None or 'genre', got {negatives!r}")
    src = resolve_axbench(folder)
    concept, genre = _concept_meta(src, concept_id)
    df = _read_parquet(src.train_file, "training data")
    if negatives == "genre":
        rows = df[(df.category == "negative") & (df.concept_genre == genre)]
        name = f"{concept} (negatives)"
    else:
        rows = df[(df.category == "positive") & (df.concept_id == concept_id)]
        name = concept
    return ConceptData(name, tuple(rows.input), tuple(rows.output))


@dataclass(frozen=True)
class AxBenchTrainingSet:
    """A concept's training set as AxBench builds it (n = 144 in Concept10/Concept500).

    Attributes:
        concept_id / concept / genre: the concept and its genre (``text``, ``code``, ``math``).
        positives: its (instruction, concept response) rows (72).
        negatives: the shared negatives of its genre (72 other instructions with the target
            model's own answers), used by DiffMean-style baselines.
    """

    concept_id: int
    concept: str
    genre: str
    positives: ConceptData
    negatives: ConceptData

    def __len__(self) -> int:
        return len(self.positives) + len(self.negatives)


def load_axbench_training_set(
    folder: "str | Path | AxBenchFolder", concept_id: int
) -> AxBenchTrainingSet:
    """Concept ``concept_id``'s positives plus its genre's shared negatives (AxBench's
    ``train.py`` rule). Raises as :func:`load_axbench_concept`."""
    src = resolve_axbench(folder)
    concept, genre = _concept_meta(src, concept_id)
    return AxBenchTrainingSet(
        concept_id,
        concept,
        genre,
        load_axbench_concept(src, concept_id),
        load_axbench_concept(src, concept_id, negatives="genre"),
    )


@dataclass(frozen=True)
class LabeledResponses:
    """Responses labelled for concept presence (AxBench ``latent_eval_data``).

    Attributes:
        concept: the concept description.
        instructions / responses: the rows' inputs and outputs.
        labels: ``"positive"``, ``"negative"`` or ``"hard negative"`` per row.
        genres: each row's instruction genre (``text`` / ``code`` / ``math``).
    """

    concept: str
    instructions: tuple[str, ...]
    responses: tuple[str, ...]
    labels: tuple[str, ...]
    genres: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def count(self, label: str) -> int:
        return sum(lab == label for lab in self.labels)


def load_axbench_latent_eval(
    folder: "str | Path | AxBenchFolder", concept_id: int
) -> LabeledResponses:
    """Concept ``concept_id``'s rows of the latent-eval parquet (held-out, labelled), in file
    order: 36 positives, 36 genre-balanced negatives and 0-9 hard negatives per concept in
    Concept10. Data nobody here wrote, for validating concept-presence judges."""
    src = resolve_axbench(folder)
    concept, _ = _concept_meta(src, concept_id)
    rows = _read_parquet(src.latent_file, "latent evaluation data")
    rows = rows[rows.concept_id == concept_id]
    return LabeledResponses(
        concept,
        tuple(rows.input),
        tuple(rows.output),
        tuple(rows.category),
        tuple(rows.concept_genre),
    )
