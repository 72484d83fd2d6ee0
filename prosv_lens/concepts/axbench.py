"""AxBench data: the release, repository and hub layouts, a concept's training set, latent-eval
rows, and the concept ids of a configuration for runs over many concepts."""

import os
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from operator import index
from pathlib import Path

from prosv_lens.concepts.data import (
    ConceptData,
    ConceptDataError,
    ConceptFileNotFoundError,
    UnknownConceptError,
)
from prosv_lens.errors import ConfigError
from prosv_lens.safe_io import json_type, parse_jsonl_text, read_text_file

_HUB_PREFIX = "hf:"
_REPO_PREFIX = "axbench-repo:"
_REPO_URL = "https://github.com/stanfordnlp/axbench"
_TRAIN_COLUMNS = ("input", "output", "concept_genre", "category", "concept_id")
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"

# (metadata, training data, latent-eval data) relative to the folder, per layout.
_LAYOUT_FILES = {
    "release": ("metadata.jsonl", "train_data.parquet", "latent_eval_data.parquet"),
    "repo": (
        "generate/metadata.jsonl",
        "generate/train_data.parquet",
        "inference/latent_eval_data.parquet",
    ),
    "hub": (None, "train/data.parquet", "test/data.parquet"),
}


@dataclass(frozen=True)
class AxBenchFolder:
    """A local AxBench configuration folder in one of three layouts (see the module docs).

    Attributes:
        root: the folder (e.g. ``.../concept500/prod_2b_l10_v1``).
        layout: ``"release"`` (metadata.jsonl, train_data.parquet and latent_eval_data.parquet
            side by side), ``"repo"`` (the AxBench GitHub repository's own layout:
            generate/metadata.jsonl, generate/train_data.parquet,
            inference/latent_eval_data.parquet) or ``"hub"`` (train/data.parquet,
            test/data.parquet, no metadata).
    """

    root: Path
    layout: str

    @property
    def metadata_file(self) -> Path | None:
        """The concepts' ``metadata.jsonl`` (``None`` in the hub layout, which has none)."""
        name = _LAYOUT_FILES[self.layout][0]
        return None if name is None else self.root / name

    @property
    def train_file(self) -> Path:
        """The training rows (``train_data.parquet`` / ``train/data.parquet``)."""
        return self.root / _LAYOUT_FILES[self.layout][1]

    @property
    def latent_file(self) -> Path:
        """Held-out labelled rows (``latent_eval_data.parquet`` / ``test/data.parquet``)."""
        return self.root / _LAYOUT_FILES[self.layout][2]


def resolve_axbench(source: "str | Path | AxBenchFolder") -> AxBenchFolder:
    """Find an AxBench configuration: a local folder, an AxBench clone plus a setting, or a hub id.

    Accepted sources:

    * a configuration folder in any layout of :class:`AxBenchFolder`, e.g. the shared Concept10
      copy ``.../axbench-concept10/prod_2b_l10_v1`` or, in a clone of the AxBench repository,
      ``<clone>/axbench/concept500/prod_2b_l10_v1`` (files in ``generate/`` and ``inference/``);
    * ``axbench-repo:<clone>:<set>/<config>``, e.g. ``axbench-repo:~/axbench:concept500/2b_l10``
      (the same folder; ``<clone>`` is the repository root or its inner ``axbench/`` folder,
      ``<config>`` is ``2b_l10`` or ``prod_2b_l10_v1``);
    * ``hf:<owner>/<dataset>/<sub/folder>`` (e.g. ``hf:pyvene/axbench-concept10/2b/l10``,
      optionally ending in ``@<revision>``), downloaded with ``huggingface_hub`` into the Hugging
      Face cache (once; later calls, also offline, read the cached files).

    A folder with only ``metadata.jsonl`` (a sparse clone, or parquet files left as Git LFS
    pointers) resolves: listing concepts works, and loading a concept's rows raises a
    :class:`ConceptDataError` that names the missing file and how to fetch it.

    Raises:
        ConceptFileNotFoundError: the folder (or clone, set, configuration) does not exist or
            holds no layout.
        ConceptDataError: a malformed ``axbench-repo:`` source; the hub is disabled
            (``HF_HUB_OFFLINE=1``) or unreachable and the files are not cached, or the dataset
            has no such folder.
    """
    if isinstance(source, AxBenchFolder):
        return source
    if isinstance(source, str) and source.startswith(_HUB_PREFIX):
        return _download_axbench(source[len(_HUB_PREFIX) :])
    if isinstance(source, str) and source.startswith(_REPO_PREFIX):
        source = _repo_config_folder(source[len(_REPO_PREFIX) :])
    root = Path(source).expanduser()
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise ConceptFileNotFoundError(
            f"AxBench folder {root} {state}: pass a folder holding metadata.jsonl + "
            f"train_data.parquet, or generate/ + inference/ (AxBench repository), or "
            f"train/data.parquet (Hugging Face release), or a source such as "
            f"'axbench-repo:<clone>:concept500/2b_l10' or 'hf:pyvene/axbench-concept10/2b/l10'."
        )
    if (root / "metadata.jsonl").is_file():
        return AxBenchFolder(root, "release")
    if (root / "generate" / "metadata.jsonl").is_file():
        return AxBenchFolder(root, "repo")
    if (root / "train" / "data.parquet").exists():
        return AxBenchFolder(root, "hub")
    configs = _subfolders(root, "prod_")
    hint = (
        f"it holds the configurations {configs}: pass one of them"
        if configs
        else "for a Concept10 or Concept500 configuration point at e.g. .../prod_2b_l10_v1"
    )
    present = sorted(p.name for p in root.iterdir())[:10]
    raise ConceptFileNotFoundError(
        f"{root} is not an AxBench folder: it needs metadata.jsonl (+ train_data.parquet), "
        f"generate/metadata.jsonl, or train/data.parquet (found: {present}); {hint}."
    )


def _subfolders(root: Path, prefix: str) -> list[str]:
    """Names of ``root``'s sub-folders starting with ``prefix``, sorted."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix))


def _repo_config_folder(spec: str) -> Path:
    """The configuration folder an ``axbench-repo:<clone>:<set>/<config>`` source names."""
    example = "e.g. 'axbench-repo:~/axbench:concept500/2b_l10'"
    clone, sep, setting = spec.rpartition(":")
    set_name, _, config = setting.partition("/")
    if not sep or not clone or not set_name or not config or "/" in config:
        raise ConceptDataError(
            f"'axbench-repo:{spec}' must read axbench-repo:<clone>:<set>/<config>, {example} "
            f"(<clone>: a clone of {_REPO_URL})."
        )
    repo = Path(clone).expanduser()
    if not repo.is_dir():
        raise ConceptFileNotFoundError(
            f"AxBench clone {repo} does not exist: clone it with 'git clone {_REPO_URL}' "
            f"and pass its folder, {example}."
        )
    data_root = repo / "axbench" if (repo / "axbench").is_dir() else repo
    set_dir = data_root / set_name
    if not set_dir.is_dir():
        raise ConceptFileNotFoundError(
            f"{data_root} has no data set {set_name!r} (found: {_subfolders(data_root, 'concept')}): "
            f"pass the AxBench repository root, {example}."
        )
    folder = set_dir / (config if config.startswith("prod_") else f"prod_{config}_v1")
    if not folder.is_dir():
        found = [n.removeprefix("prod_").removesuffix("_v1") for n in _subfolders(set_dir, "prod_")]
        raise ConceptFileNotFoundError(
            f"{set_dir} has no configuration {config!r} ({folder.name}); found: {found}."
        )
    return folder


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


def _fetch_hint(src: AxBenchFolder, path: Path) -> str:
    """How to get ``path`` of ``src`` onto this machine (one sentence, no newline)."""
    if src.layout == "hub":
        return "download the configuration again (a hf: source) or point at a complete folder"
    rel = path.relative_to(src.root).as_posix()
    return (
        f"the AxBench repository keeps it as a large file: in your clone of {_REPO_URL} run "
        f"'git lfs pull' (or 'git sparse-checkout disable' in a sparse clone), or make a full "
        f"clone, so that {src.root.name}/{rel} holds the data; listing concepts needs only "
        f"the metadata"
    )


def _is_lfs_pointer(path: Path) -> bool:
    """Whether ``path`` is a Git LFS pointer file left in place of the data."""
    try:
        with path.open("rb") as f:
            return f.read(len(_LFS_POINTER)) == _LFS_POINTER
    except OSError:
        return False


def _read_parquet(src: AxBenchFolder, path: Path, what: str):
    """The parquet ``path`` of ``src`` (cached by path and mtime), checked for AxBench columns.

    Raises:
        ConceptFileNotFoundError: the file is absent (a metadata-only folder).
        ConceptDataError: a Git LFS pointer, an unreadable/corrupt file or missing columns.
    """
    if not path.exists():
        raise ConceptFileNotFoundError(
            f"{path} not found: this AxBench folder has no {what}; {_fetch_hint(src, path)}."
        )
    if _is_lfs_pointer(path):
        raise ConceptDataError(
            f"{path} is a Git LFS pointer, not the {what}; {_fetch_hint(src, path)}."
        )
    return _read_parquet_cached(str(path), path.stat().st_mtime_ns, _TRAIN_COLUMNS)


def axbench_concepts(folder: "str | Path | AxBenchFolder") -> list[dict]:
    """One dict per concept: ``concept_id``, ``concept``, ``concept_genres_map`` (and ``ref``).

    Read from ``metadata.jsonl`` in the release and repository layouts (so it works in a
    metadata-only folder), or derived from the training parquet's positives (``concept_id``,
    ``output_concept``, ``concept_genre``) in the hub layout.
    """
    src = resolve_axbench(folder)
    if src.metadata_file is not None:
        return _read_metadata(src.metadata_file)
    df = _read_parquet(src, src.train_file, "training data")
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
    df = _read_parquet(src, src.train_file, "training data")
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
    rows = _read_parquet(src, src.latent_file, "latent evaluation data")
    rows = rows[rows.concept_id == concept_id]
    return LabeledResponses(
        concept,
        tuple(rows.input),
        tuple(rows.output),
        tuple(rows.category),
        tuple(rows.concept_genre),
    )


# -- runs over many concepts ----------------------------------------------------------------------


def _id_ranges(ids: Iterable[int]) -> str:
    """Sorted ids as compact ranges: ``0-9, 12, 15-20``."""
    spans: list[list[int]] = []
    for i in sorted(set(ids)):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _as_ids(ids: Iterable[object], what: str) -> tuple[int, ...]:
    """``ids`` as whole numbers, each once (:class:`ConfigError` naming the offenders)."""
    out: list[int] = []
    for i in ids:
        try:
            if isinstance(i, bool):
                raise TypeError
            out.append(index(i))  # type: ignore[arg-type]
        except TypeError:
            raise ConfigError(
                f"{what} must be whole numbers (concept ids), got {i!r} ({type(i).__name__})."
            ) from None
    repeated = sorted({i for i in out if out.count(i) > 1})
    if repeated:
        raise ConfigError(f"{what} lists concept ids {repeated} more than once: list each once.")
    return tuple(out)


def axbench_concept_ids(
    source: "str | Path | AxBenchFolder",
    *,
    first: int | None = None,
    ids: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """The concept ids of an AxBench configuration, checked, for runs over many concepts.

    Only the metadata is read, so this works in a metadata-only folder (e.g. a clone without the
    Concept500 parquet files). With neither ``first`` nor ``ids``: every id, ascending.

    Args:
        source: an AxBench configuration (see :func:`resolve_axbench`).
        first: the ``first`` lowest ids (Concept10 is the first 10 concepts of Concept500, so
            ``first=10`` of a Concept500 folder names the Concept10 concepts).
        ids: these ids, in the order given (each must exist in the configuration).

    Raises:
        ConfigError: both ``first`` and ``ids``, ``first`` < 1, an empty ``ids``, an id that is
            not a whole number, or one listed twice.
        UnknownConceptError: ids not in the configuration (named, with the valid ids); a
            :class:`ConceptDataError` and a ``KeyError``.
        ConceptDataError: ``first`` exceeds the number of concepts; unreadable metadata.
    """
    if first is not None and ids is not None:
        raise ConfigError("pass first or ids, not both (first: the N lowest ids; ids: a list).")
    if first is not None and (isinstance(first, bool) or not isinstance(first, int) or first < 1):
        raise ConfigError(f"first must be a whole number >= 1, got {first!r}.")
    wanted = None if ids is None else _as_ids(ids, "ids")
    if wanted == ():
        raise ConfigError("ids is empty: list at least one concept id, or pass first=N.")
    src = resolve_axbench(source)
    known = sorted({int(m["concept_id"]) for m in axbench_concepts(src)})
    valid = f"it holds {len(known)} concepts, ids {_id_ranges(known)}"
    if first is not None:
        if first > len(known):
            raise ConceptDataError(
                f"first={first} but {src.root} holds only {len(known)} concepts (ids "
                f"{_id_ranges(known)}): lower first, or point at a larger set (Concept500)."
            )
        return tuple(known[:first])
    if wanted is None:
        return tuple(known)
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise UnknownConceptError(f"unknown concept ids {unknown} in {src.root}: {valid}.")
    return wanted


def concept_blocks(ids: Iterable[int], k: int) -> tuple[tuple[int, ...], ...]:
    """``ids`` cut into consecutive blocks of ``k`` (the last may be shorter), in the given order.

    A block is one work unit of a run over many concepts: e.g. 500 ids with ``k=50`` give 10
    blocks, and joining the blocks gives back ``ids``. No ids give no blocks.

    Raises:
        ConfigError: ``k`` is not a whole number >= 1, or an id is not a whole number or is
            listed twice.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"block size k must be a whole number >= 1, got {k!r}.")
    todo = _as_ids(ids, "the concept ids")
    return tuple(todo[i : i + k] for i in range(0, len(todo), k))
