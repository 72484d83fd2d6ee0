"""Concept data containers, their errors, and the plain JSONL format."""

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prosv_lens.errors import (  # noqa: F401 - re-exported
    ConceptDataError,
    ConceptFileNotFoundError,
    ProsvError,
    UnknownConceptError,
)
from prosv_lens.prompts import Prompt
from prosv_lens.safe_io import json_type, parse_jsonl_text, read_text_file


@dataclass(frozen=True)
class ConceptData:
    """One concept's training data.

    Attributes:
        name: the concept (also names its vector and seeds its initialisation and data order).
        prompts: instructions (strings or message lists; the chat template is applied).
        responses: concept responses, one per prompt (the LM targets; SimPO's winners).
        negatives: neutral responses to the same prompts (SimPO's losers; unused by ``lang``).
    """

    name: str
    prompts: tuple[Prompt, ...]
    responses: tuple[str, ...]
    negatives: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, indices: Sequence[int]) -> "ConceptData":
        """The examples at ``indices`` (e.g. a train/held-out split)."""
        neg = tuple(self.negatives[i] for i in indices) if self.negatives is not None else None
        return ConceptData(
            self.name,
            tuple(self.prompts[i] for i in indices),
            tuple(self.responses[i] for i in indices),
            neg,
        )

    def split(self, n_train: int) -> tuple["ConceptData", "ConceptData"]:
        """The first ``n_train`` examples and the rest."""
        return self.subset(range(n_train)), self.subset(range(n_train, len(self)))


_JSONL_WHAT = 'a JSONL file of {"prompt": ..., "response": ...[, "negative": ...]} rows'
_EXAMPLE_ROW = '{"prompt": "Name a colour.", "response": "Blue, like the sea."}'


def _text_field(path: Path, line: int, row: dict, field: str) -> str:
    value = row[field]
    if not isinstance(value, str):
        raise ConceptDataError(
            f"{path}:{line}: field {field!r} must be a string, got the {json_type(value)} "
            f"{json.dumps(value)[:40]}: write the text in quotes"
        )
    if not value.strip():
        raise ConceptDataError(f"{path}:{line}: field {field!r} is blank: give it some text")
    return value


def _prompt_field(path: Path, line: int, row: dict) -> Prompt:
    """A prompt: a non-blank string, or a non-empty list of ``{"role", "content"}`` messages."""
    value = row["prompt"]
    if not isinstance(value, list):
        return _text_field(path, line, row, "prompt")
    if not value or not all(_is_message(m) for m in value):
        raise ConceptDataError(
            f"{path}:{line}: field 'prompt' is a list but not of "
            '{"role": ..., "content": ...} messages: give a string or such a list'
        )
    return value


def _is_message(item: object) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("role"), str)
        and isinstance(item.get("content"), str)
    )


def load_jsonl_concept(path: str | Path, name: str | None = None) -> ConceptData:
    """A concept from a JSON-lines file; the concept name defaults to the file stem.

    Each non-blank line is an object with ``"prompt"`` (a string, or a list of
    ``{"role", "content"}`` messages) and ``"response"`` (a string), and optionally
    ``"negative"`` (a string: the neutral response, SimPO's loser). ``negative`` is all or
    nothing: given on every line, or on none (a file where some lines lack it is refused, naming
    the first such line, rather than silently dropping it everywhere). Other fields are ignored.

    Raises:
        ConceptFileNotFoundError: ``path`` does not exist.
        ConceptDataError: one line naming the problem: ``FILE:LINE: ...`` (1-based physical line
            numbers, blank lines counted) with the field for a malformed row, or an empty file,
            a folder, an unreadable file, text that is not UTF-8.
    """
    path = Path(path)
    text = read_text_file(
        path, what=_JSONL_WHAT, error=ConceptDataError, missing=ConceptFileNotFoundError
    )
    fix = f"each line must be one JSON object like {_EXAMPLE_ROW}"
    rows = parse_jsonl_text(text, path, fix=fix, error=ConceptDataError)
    prompts, responses, negatives = [], [], []
    with_negative = [line for line, row in rows if isinstance(row, dict) and "negative" in row]
    for line, row in rows:
        if not isinstance(row, dict):
            raise ConceptDataError(
                f"{path}:{line}: expected a JSON object, got the {json_type(row)} "
                f"{json.dumps(row)[:40]}: {fix}"
            )
        lacking = [f for f in ("prompt", "response") if f not in row]
        if lacking:
            raise ConceptDataError(
                f"{path}:{line}: field {lacking[0]!r} is missing (the line has "
                f"{sorted(row) or 'no fields'}): {fix}"
            )
        prompts.append(_prompt_field(path, line, row))
        responses.append(_text_field(path, line, row, "response"))
        if with_negative and "negative" not in row:
            raise ConceptDataError(
                f"{path}:{line}: field 'negative' is missing, but line {with_negative[0]} has "
                "one: give 'negative' on every line or on none"
            )
        if with_negative:
            negatives.append(_text_field(path, line, row, "negative"))
    return ConceptData(
        name or path.stem, tuple(prompts), tuple(responses), tuple(negatives) or None
    )


def concept_slug(name: str) -> str:
    """A file-name-safe slug: ``"space and astronomy"`` -> ``"space-and-astronomy"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "concept"
