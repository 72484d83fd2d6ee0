"""The saved results of ``prosv reproduce``, typed: per concept and for the whole run.

Each is a :class:`JsonResult` (every field's type is checked on load, a mismatch is one
:class:`~prosv_lens.errors.ResultFileError` naming the file and field):

* :class:`ConceptResult`: a finished concept, ``concepts/<id>/result.json`` (its presence marks
  the concept finished);
* :class:`ConceptUtility`: the concept's utility stage, ``concepts/<id>/utility.json`` (method ->
  task accuracy and KL damage; the file is that map itself, plus ``format_version``);
* :class:`UnsteeredUtility`: the unsteered model's utility, ``shared/utility_unsteered.json``;
* :class:`ReproduceSummary`: the run's table, ``summary.json`` (``summary.md`` is its text).

The layouts are the ones written before results were typed, plus ``format_version``; a file
without it reads as version 1. Judge parse failures absent from a file saved before they were
counted read as ``None`` and are not written back either.
"""

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prosv_lens.evaluation.stats import Estimate
from prosv_lens.experiments.demo_results import SavedMethodScore, SavedParseFailures, UtilityResult
from prosv_lens.experiments.results import JsonResult

__all__ = [
    "ConceptResult",
    "ConceptScore",
    "ConceptUtility",
    "ReproduceSummary",
    "SavedMethodScore",
    "SavedParseFailures",
    "SummaryMethod",
    "TrainRecord",
    "UnsteeredUtility",
    "UtilityResult",
]


def _without_none(items: Sequence[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """``items`` with ``key`` left out where it is ``None`` (a field older files lack)."""
    return [{k: v for k, v in d.items() if not (k == key and v is None)} for d in items]


@dataclass(frozen=True)
class TrainRecord:
    """How one trained vector's training went, from its saved log.

    Attributes:
        steps: logged optimizer steps.
        loss_first: the first step's loss (``None``: no log).
        loss_last: the last step's loss (``None``: no log).
    """

    steps: int
    loss_first: float | None
    loss_last: float | None


@dataclass(frozen=True)
class ConceptResult(JsonResult):
    """One finished concept: its folder's ``result.json``.

    Attributes:
        concept_id: the AxBench concept id.
        concept: the concept's description.
        genre: its AxBench genre (the negatives DiffMean used).
        data_sha256: hash of its training data.
        diffmean_factor: DiffMean's factor selected on the selection half (x the residual norm).
        scores: per-method judged scores over the concept's test answers (CIs over answers).
        alphas: method -> the steering factor used (``None``: the prompt baseline).
        v_norms: steering method -> ``|v|`` of its vector.
        train: trained vector (``prosv``, ``fssv``) -> its training record.
        utility: method -> task accuracy and KL damage under it.
        seconds: stage (``diffmean``, ``steering``, ``utility``) -> wall time (s).
    """

    FORMAT_VERSION = 1
    WHAT = "a concept result (concepts/<id>/result.json of prosv reproduce)"

    concept_id: int
    concept: str
    genre: str
    data_sha256: str
    diffmean_factor: float | None
    scores: tuple[SavedMethodScore, ...]
    alphas: dict[str, float | None]
    v_norms: dict[str, float]
    train: dict[str, TrainRecord]
    utility: dict[str, UtilityResult]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object :meth:`save` writes (a score without ``parse_failures`` omits it)."""
        out = super().to_dict()
        out["scores"] = _without_none(out["scores"], "parse_failures")
        return out


@dataclass(frozen=True)
class ConceptUtility(JsonResult):
    """A concept's utility stage: its folder's ``utility.json``, kept so a resumed run skips it.

    The file is the map ``method -> {"accuracy", "kl"}`` itself (plus ``format_version``), as
    before results were typed.

    Attributes:
        methods: method -> task accuracy and KL damage under it.
    """

    FORMAT_VERSION = 1
    WHAT = "a concept's utility (concepts/<id>/utility.json of prosv reproduce)"

    methods: dict[str, UtilityResult]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object :meth:`save` writes: each method's utility, then ``format_version``."""
        return {**super().to_dict()["methods"], "format_version": self.FORMAT_VERSION}

    @classmethod
    def from_dict(cls, data: Any, *, source: str | Path = "the result") -> "ConceptUtility":
        """The utility held in ``data`` (the parsed file: method -> utility).

        Raises:
            ResultFileError: ``data`` is not an object, has another format version, or a
                method's entry is not a utility (named as ``methods.<field>``).
        """
        if isinstance(data, dict):
            methods = {k: v for k, v in data.items() if k != "format_version"}
            data = {"methods": methods, "format_version": data.get("format_version", 1)}
        return super().from_dict(data, source=source)


@dataclass(frozen=True)
class UnsteeredUtility(JsonResult):
    """The unsteered model's utility, shared by every concept: ``shared/utility_unsteered.json``.

    Attributes:
        accuracy: task accuracy of the unsteered model.
        kl: always ``None`` (no KL damage from itself); kept for the layout of a method's
            utility.
    """

    FORMAT_VERSION = 1
    WHAT = "the unsteered utility (shared/utility_unsteered.json of prosv reproduce)"

    accuracy: Estimate
    kl: Estimate | None = None


@dataclass(frozen=True)
class SummaryMethod:
    """One method's row of the summary: judged scores, utility and mean factor.

    Attributes:
        method: the method's name.
        concept / instruct / fluency / overall: judged scores (0-2); CIs over concepts when
            there are several, over answers for one.
        factors: concept -> the factor used (``None``: no factor search).
        n_answers: test answers scored.
        utility_accuracy: task accuracy under the method (over concepts when several).
        kl: KL damage (nats) under it (``None`` for the unsteered model).
        alpha_mean: mean steering factor over the concepts (``None``: the method has none).
        parse_failures: unparseable judge replies behind its answers (``None`` in a summary
            saved before they were counted).
    """

    method: str
    concept: Estimate
    instruct: Estimate
    fluency: Estimate
    overall: Estimate
    factors: dict[str, float | None]
    n_answers: int
    utility_accuracy: Estimate
    kl: Estimate | None
    alpha_mean: float | None
    parse_failures: SavedParseFailures | None = None


@dataclass(frozen=True)
class ConceptScore:
    """One method on one concept, as the summary's per-concept table lists it.

    Attributes:
        concept_id: the AxBench concept id.
        concept_name: the concept's description.
        method: the method's name.
        concept / instruct / fluency / overall: judged scores (0-2) over the concept's answers.
        factors: concept -> the factor used (``None``: no factor search).
        n_answers: test answers scored.
        parse_failures: unparseable judge replies (``None`` in a summary saved before they were
            counted).
    """

    concept_id: int
    concept_name: str
    method: str
    concept: Estimate
    instruct: Estimate
    fluency: Estimate
    overall: Estimate
    factors: dict[str, float | None]
    n_answers: int
    parse_failures: SavedParseFailures | None = None

    @classmethod
    def of(cls, concept_id: int, concept_name: str, score: SavedMethodScore) -> "ConceptScore":
        """``score`` of the concept ``concept_id`` named ``concept_name``."""
        return cls(
            concept_id,
            concept_name,
            score.method,
            score.concept,
            score.instruct,
            score.fluency,
            score.overall,
            dict(score.factors),
            score.n_answers,
            score.parse_failures,
        )


@dataclass(frozen=True)
class ReproduceSummary(JsonResult):
    """A ``prosv reproduce`` run's table: its folder's ``summary.json``.

    Attributes:
        setting: the setting's name.
        model: the model id.
        dtype: the weights' dtype.
        layer: the steered block.
        data_source: where the concepts came from (``hf:...`` or ``folder:<name>``).
        judge: the judge's name.
        concepts: ``(concept id, description)`` of each concept, in run order.
        methods: one row per method (the unsteered model, the prompt, DiffMean, PrOSV, FSSV).
        per_concept: each concept's scores per method.
        fingerprint: the run's ``fingerprint.json`` (what produced the results).
        judge_parse_failures: unparseable judge replies over every judged row, selection half
            included (``None`` in a summary saved before they were counted).
        seconds: the invocation's wall time (``None`` until the run has finished).
    """

    FORMAT_VERSION = 1
    WHAT = "a reproduce summary (summary.json of prosv reproduce)"

    setting: str
    model: str
    dtype: str
    layer: int
    data_source: str
    judge: str
    concepts: tuple[tuple[int, str], ...]
    methods: tuple[SummaryMethod, ...]
    per_concept: tuple[ConceptScore, ...]
    fingerprint: dict[str, Any]
    judge_parse_failures: SavedParseFailures | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object :meth:`save` writes (parse failures and ``seconds`` are left out where
        ``None``, as before results were typed)."""
        out = super().to_dict()
        out["methods"] = _without_none(out["methods"], "parse_failures")
        out["per_concept"] = _without_none(out["per_concept"], "parse_failures")
        for key in ("judge_parse_failures", "seconds"):
            if out[key] is None:
                del out[key]
        return out

    def by_method(self) -> dict[str, SummaryMethod]:
        """Method -> its row, in saved order."""
        return {m.method: m for m in self.methods}

    def with_seconds(self, seconds: float) -> "ReproduceSummary":
        """A copy with the invocation's wall time."""
        return dataclasses.replace(self, seconds=seconds)
