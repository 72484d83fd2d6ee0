"""Concept training data: a name, instructions and responses (and neutral responses).

Loaders for the AxBench format (a folder with ``metadata.jsonl`` and ``train_data.parquet``,
e.g. AxBench Concept10/Concept500) and for a plain JSONL file of
``{"prompt": ..., "response": ..., "negative": ...}`` rows.

AxBench builds a concept's training set from its 72 positives (instruction, concept response);
the genre's shared negatives are different instructions with the target model's own answers,
used by DiffMean-style baselines (:func:`load_axbench_concept` with ``negatives="genre"``).
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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


def axbench_concepts(folder: str | Path) -> list[dict]:
    """The ``metadata.jsonl`` rows of an AxBench folder (``concept_id``, ``concept``, genres)."""
    path = Path(folder) / "metadata.jsonl"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: point at an AxBench folder (metadata.jsonl, train_data.parquet)"
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_axbench_concept(
    folder: str | Path, concept_id: int, *, negatives: str | None = None
) -> ConceptData:
    """Concept ``concept_id``'s positives from ``train_data.parquet``, in file order.

    Args:
        folder: an AxBench configuration folder (e.g. ``.../axbench-concept10/prod_2b_l10_v1``).
        concept_id: the concept's id in ``metadata.jsonl``.
        negatives: ``"genre"`` returns instead the shared negatives of the concept's genre (other
            instructions answered by the target model) as a ConceptData named ``<concept> (negatives)``.
    """
    import pandas as pd

    meta = {m["concept_id"]: m for m in axbench_concepts(folder)}
    if concept_id not in meta:
        raise KeyError(f"concept_id {concept_id} not in {folder}; available: {sorted(meta)}")
    concept = meta[concept_id]["concept"]
    df = pd.read_parquet(Path(folder) / "train_data.parquet")
    if negatives == "genre":
        genre = meta[concept_id]["concept_genres_map"][concept][0]
        rows = df[(df.category == "negative") & (df.concept_genre == genre)]
        name = f"{concept} (negatives)"
    else:
        rows = df[(df.category == "positive") & (df.concept_id == concept_id)]
        name = concept
    return ConceptData(name, tuple(rows.input), tuple(rows.output))


def load_jsonl_concept(path: str | Path, name: str | None = None) -> ConceptData:
    """Rows ``{"prompt", "response"[, "negative"]}``; the concept name defaults to the file stem."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    bad = [i for i, r in enumerate(rows) if not {"prompt", "response"} <= set(r)]
    if not rows or bad:
        raise ValueError(f"{path}: every line needs 'prompt' and 'response' (bad lines: {bad[:5]})")
    negs = tuple(r["negative"] for r in rows) if all("negative" in r for r in rows) else None
    return ConceptData(
        name or Path(path).stem,
        tuple(r["prompt"] for r in rows),
        tuple(r["response"] for r in rows),
        negs,
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


def load_axbench_latent_eval(folder: str | Path, concept_id: int) -> LabeledResponses:
    """Concept ``concept_id``'s rows of ``latent_eval_data.parquet`` (held-out, labelled), in
    file order: 36 positives, 36 genre-balanced negatives and 0-9 hard negatives per concept in
    Concept10. Data nobody here wrote, for validating concept-presence judges."""
    import pandas as pd

    meta = {m["concept_id"]: m for m in axbench_concepts(folder)}
    if concept_id not in meta:
        raise KeyError(f"concept_id {concept_id} not in {folder}; available: {sorted(meta)}")
    path = Path(folder) / "latent_eval_data.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: this AxBench folder has no latent evaluation data"
        )
    rows = pd.read_parquet(path)
    rows = rows[rows.concept_id == concept_id]
    return LabeledResponses(
        meta[concept_id]["concept"], tuple(rows.input), tuple(rows.output),
        tuple(rows.category), tuple(rows.concept_genre),
    )  # fmt: skip
