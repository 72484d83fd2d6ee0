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


def load_jsonl_concept(path: str | Path, name: str | None = None) -> ConceptData:
    """Rows ``{"prompt", "response"[, "negative"]}``; the concept name defaults to the file stem."""
    path = Path(path)
    if not path.exists():
        raise ConceptFileNotFoundError(f"{path} not found: pass a JSONL file of concept rows.")
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ConceptDataError(f"{path} is not valid JSON lines ({e}).") from e
    bad = [i for i, r in enumerate(rows) if not {"prompt", "response"} <= set(r)]
    if not rows or bad:
        raise ConceptDataError(
            f"{path}: every line needs 'prompt' and 'response' (bad lines: {bad[:5]})"
        )
    negs = tuple(r["negative"] for r in rows) if all("negative" in r for r in rows) else None
    return ConceptData(
        name or path.stem,
        tuple(r["prompt"] for r in rows),
        tuple(r["response"] for r in rows),
        negs,
    )


def concept_slug(name: str) -> str:
    """A file-name-safe slug: ``"space and astronomy"`` -> ``"space-and-astronomy"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "concept"
