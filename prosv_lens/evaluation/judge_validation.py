"""Validate the offline judge on labelled AxBench data (``latent_eval_data.parquet``).

Concept presence: per concept, the AUROC of the judge's continuous concept score for the
labelled positives against the negatives (AxBench's concept-detection metric) and against the
hard negatives (responses that use a related word in another sense), next to the same AUROCs of
the plain whole-response cosine with the concept description: the difference is what the
sentence-level contrast earned. Instruction relevance: every response scored with its own
instruction and with another row's instruction (a seeded derangement, never the same text);
AUROC over all scores and the paired accuracy (own > mismatched).

None of these rows is used to fit the judge (its constants come from ``train_data.parquet``),
so these are held-out numbers.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from prosv_lens.concepts import ConceptDataError, axbench_concepts, load_axbench_latent_eval
from prosv_lens.evaluation.offline_judge import OfflineJudge


@dataclass(frozen=True)
class ConceptValidation:
    """One concept's concept-presence AUROCs (``None`` where it has no hard negatives)."""

    concept_id: int
    concept: str
    n_positive: int
    n_negative: int
    n_hard: int
    auroc: float
    auroc_plain: float
    auroc_hard: float | None
    auroc_hard_plain: float | None


@dataclass(frozen=True)
class RelevanceValidation:
    """Own- vs mismatched-instruction separation over ``n`` responses."""

    n: int
    auroc: float
    accuracy: float
    auroc_plain: float
    accuracy_plain: float


@dataclass(frozen=True)
class JudgeValidation:
    """The validation of one judge on one AxBench configuration folder."""

    folder: str
    judge: str
    concepts: tuple[ConceptValidation, ...]
    relevance: RelevanceValidation

    @property
    def mean_auroc(self) -> float:
        return float(np.mean([c.auroc for c in self.concepts]))

    @property
    def mean_auroc_plain(self) -> float:
        return float(np.mean([c.auroc_plain for c in self.concepts]))

    @property
    def mean_auroc_hard(self) -> float | None:
        vals = [c.auroc_hard for c in self.concepts if c.auroc_hard is not None]
        return float(np.mean(vals)) if vals else None

    @property
    def mean_auroc_hard_plain(self) -> float | None:
        vals = [c.auroc_hard_plain for c in self.concepts if c.auroc_hard_plain is not None]
        return float(np.mean(vals)) if vals else None

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "mean_auroc": self.mean_auroc,
            "mean_auroc_plain": self.mean_auroc_plain,
            "mean_auroc_hard": self.mean_auroc_hard,
            "mean_auroc_hard_plain": self.mean_auroc_hard_plain,
        }


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def validate_concept(judge: OfflineJudge, folder: str | Path, concept_id: int) -> ConceptValidation:
    """Concept-presence AUROCs of one concept's labelled latent-eval rows."""
    data = load_axbench_latent_eval(folder, concept_id)
    labels = np.array(data.labels)
    if not (labels == "positive").any() or not (labels == "negative").any():
        raise ConceptDataError(
            f"concept {concept_id} in {folder} lacks positive or negative latent-eval rows: "
            "validate on a complete AxBench configuration (e.g. prod_2b_l10_v1)"
        )
    scores = judge.concept_scores(data.responses, data.concept)
    plain = judge.plain_cosines(data.responses, data.concept)
    pos, neg, hard = (labels == "positive"), (labels == "negative"), (labels == "hard negative")
    return ConceptValidation(
        concept_id,
        data.concept,
        int(pos.sum()),
        int(neg.sum()),
        int(hard.sum()),
        _auroc(scores[pos], scores[neg]),
        _auroc(plain[pos], plain[neg]),
        _auroc(scores[pos], scores[hard]) if hard.any() else None,
        _auroc(plain[pos], plain[hard]) if hard.any() else None,
    )


def validate_relevance(
    judge: OfflineJudge, instructions: Sequence[str], responses: Sequence[str], *, seed: int = 0
) -> RelevanceValidation:
    """Each response with its own instruction vs with another row's (a different text)."""
    n = len(responses)
    if n < 2 or len(set(instructions)) < 2:
        raise ValueError("relevance validation needs at least two distinct instructions")
    rng = np.random.default_rng(seed)
    other = []
    for i in range(n):
        j = i
        while instructions[j] == instructions[i]:
            j = int(rng.integers(n))
        other.append(instructions[j])
    own_s, mis_s = (
        judge.relevance_scores(instructions, responses),
        judge.relevance_scores(other, responses),
    )
    q_own, q_mis, r = judge.embed(instructions), judge.embed(other), judge.embed(responses)
    own_p, mis_p = np.sum(q_own * r, axis=1), np.sum(q_mis * r, axis=1)
    return RelevanceValidation(
        n,
        _auroc(own_s, mis_s),
        float(np.mean(own_s > mis_s)),
        _auroc(own_p, mis_p),
        float(np.mean(own_p > mis_p)),
    )


def validate_offline_judge(
    folder: str | Path,
    judge: OfflineJudge | None = None,
    *,
    concept_ids: Sequence[int] | None = None,
    seed: int = 0,
) -> JudgeValidation:
    """Concept-presence and relevance validation of ``judge`` on an AxBench folder.

    Args:
        folder: an AxBench configuration folder with ``metadata.jsonl`` and
            ``latent_eval_data.parquet`` (e.g. ``../shared/data/axbench-concept10/prod_2b_l10_v1``).
        judge: the judge (default: a fresh :class:`OfflineJudge`; no reference model is needed).
        concept_ids: concepts to validate (default: all in ``metadata.jsonl``).
        seed: seeds the mismatched-instruction derangement.

    Raises:
        FileNotFoundError: the folder lacks ``metadata.jsonl`` or ``latent_eval_data.parquet``.
    """
    judge = judge or OfflineJudge()
    ids = (
        list(concept_ids)
        if concept_ids is not None
        else [m["concept_id"] for m in axbench_concepts(folder)]
    )
    concepts = tuple(validate_concept(judge, folder, cid) for cid in ids)
    instructions: list[str] = []
    responses: list[str] = []
    for cid in ids:
        data = load_axbench_latent_eval(folder, cid)
        instructions += data.instructions
        responses += data.responses
    relevance = validate_relevance(judge, instructions, responses, seed=seed)
    return JudgeValidation(str(folder), judge.name, concepts, relevance)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_validation(results: JudgeValidation | Sequence[JudgeValidation]) -> str:
    """Markdown: a per-concept AUROC table per folder, then a summary table over folders."""
    results = [results] if isinstance(results, JudgeValidation) else list(results)
    lines = []
    for res in results:
        lines += [
            f"### {Path(res.folder).name} ({res.judge})",
            "",
            "| id | concept | pos/neg/hard | AUROC | plain cosine | AUROC hard | plain hard |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in res.concepts:
            lines.append(
                f"| {c.concept_id} | {c.concept[:60]} | {c.n_positive}/{c.n_negative}/{c.n_hard} "
                f"| {c.auroc:.3f} | {c.auroc_plain:.3f} | {_f(c.auroc_hard)} | {_f(c.auroc_hard_plain)} |"
            )
        lines += [
            f"| | **mean** | | **{res.mean_auroc:.3f}** | {res.mean_auroc_plain:.3f} "
            f"| {_f(res.mean_auroc_hard)} | {_f(res.mean_auroc_hard_plain)} |",
            "",
        ]
    lines += [
        "| folder | mean AUROC | plain cosine | mean AUROC hard | plain hard | relevance AUROC | relevance acc | plain rel. AUROC | plain rel. acc |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for res in results:
        r = res.relevance
        lines.append(
            f"| {Path(res.folder).name} | {res.mean_auroc:.3f} | {res.mean_auroc_plain:.3f} "
            f"| {_f(res.mean_auroc_hard)} | {_f(res.mean_auroc_hard_plain)} | {r.auroc:.4f} "
            f"| {r.accuracy:.4f} | {r.auroc_plain:.4f} | {r.accuracy_plain:.4f} |"
        )
    return "\n".join(lines) + "\n"
