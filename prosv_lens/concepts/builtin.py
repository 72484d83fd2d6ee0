"""Built-in data shipped with the package: the instruction set and the built-in concepts."""

import json
from functools import cache
from importlib import resources

from prosv_lens.concepts.data import (
    ConceptData,
    ConceptDataError,
    UnknownConceptError,
    concept_slug,
)

INSTRUCTION_SPLITS = ("train", "eval", "all")


@cache
def _instruction_rows() -> tuple[dict, ...]:
    text = resources.files("prosv_lens").joinpath("resources/instructions.json").read_text()
    return tuple(json.loads(text)["instructions"])


def builtin_instructions(split: str = "train", *, category: str | None = None) -> tuple[str, ...]:
    """The project's own instruction set (300 plain requests in 10 categories).

    Args:
        split: ``"train"`` (240), ``"eval"`` (60, held out: 6 per category) or ``"all"``.
            The split is fixed in the file; rows are interleaved by category, so any prefix of
            a split is balanced across categories.
        category: keep only this category (see :func:`builtin_instruction_categories`).
    """
    if split not in INSTRUCTION_SPLITS:
        raise ConceptDataError(f"split must be one of {INSTRUCTION_SPLITS}, got {split!r}")
    rows = _instruction_rows()
    if category is not None and category not in builtin_instruction_categories():
        raise UnknownConceptError(
            f"no instruction category {category!r}; available: {builtin_instruction_categories()}"
        )
    return tuple(
        r["text"]
        for r in rows
        if (split == "all" or r["split"] == split) and category in (None, r["category"])
    )


def builtin_instruction_categories() -> tuple[str, ...]:
    """The categories of :func:`builtin_instructions`, in file order."""
    return tuple(dict.fromkeys(r["category"] for r in _instruction_rows()))


def _builtin_concept_dir():
    return resources.files("prosv_lens").joinpath("resources/concepts")


def builtin_concepts() -> list[str]:
    """Names of the concepts shipped with the package (see :func:`load_builtin_concept`)."""
    names = []
    for f in sorted(_builtin_concept_dir().iterdir(), key=lambda f: f.name):
        if f.name.endswith(".jsonl"):
            first = f.read_text().split("\n", 1)[0]
            names.append(json.loads(first).get("concept", f.name[: -len(".jsonl")]))
    return names


def load_builtin_concept(name: str) -> ConceptData:
    """A built-in concept: plain instructions (the train split's first rows), SmolLM2's
    concept-woven answers (responses) and its plain answers (negatives).

    Raises:
        UnknownConceptError: no built-in concept of that name (the message lists them).
    """
    path = _builtin_concept_dir().joinpath(f"{concept_slug(name)}.jsonl")
    if not path.is_file():
        raise UnknownConceptError(
            f"no built-in concept {name!r}; available: {builtin_concepts()}. For another concept "
            f"build data with prosv_lens.builder.build_concept_data."
        )
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return ConceptData(
        rows[0].get("concept", name),
        tuple(r["prompt"] for r in rows),
        tuple(r["response"] for r in rows),
        tuple(r["negative"] for r in rows),
    )
