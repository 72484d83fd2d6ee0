"""The saved summary of a ``prosv demo`` run: typed, written and read as JSON.

:class:`DemoResults` is the run folder's ``results.json`` (:class:`JsonResult`: every field's
type is checked on load, a mismatch is one :class:`~prosv_lens.errors.ResultFileError` naming the
file and field). The judged answers (``rows.jsonl``) are a row log, not part of it. The layout is
the one written before results were typed, plus ``format_version``; a file without it (such as
``results/demo_ocean/results.json``) reads as version 1.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from prosv_lens.evaluation.judges import ParseFailures
from prosv_lens.evaluation.stats import Estimate
from prosv_lens.evaluation.steering_eval import MethodScore
from prosv_lens.experiments.results import JsonResult

STAGES = ("model", "data", "train", "baselines", "steering", "utility", "robustness", "report")
"""The demo's stages in the order they run (the keys of :attr:`DemoResults.seconds`, and
``total``)."""


@dataclass(frozen=True)
class SavedParseFailures:
    """Saved :class:`~prosv_lens.evaluation.judges.ParseFailures`: unparseable judge replies.

    Attributes:
        replies: replies counted (one per criterion of each rated answer).
        failed: replies that could not be parsed (rated 0).
        rate: ``failed / replies`` (0 when nothing was counted).
        by_criterion: unparseable replies per criterion.
    """

    replies: int
    failed: int
    rate: float
    by_criterion: dict[str, int]

    @classmethod
    def of(cls, failures: ParseFailures) -> "SavedParseFailures":
        """The saved form of ``failures``."""
        return cls(failures.replies, failures.failed, failures.rate, dict(failures.by_criterion))


@dataclass(frozen=True)
class SavedMethodScore:
    """A saved :class:`~prosv_lens.evaluation.steering_eval.MethodScore`: one method's
    test-split scores (0-2) with 95% bootstrap CIs.

    Attributes:
        method: the method's name (``prosv``, ``fssv 80%``, ...).
        concept / instruct / fluency: the judge's ratings.
        overall: the harmonic mean of the three (0 if any is 0).
        factors: concept -> the factor used (``None``: no factor search).
        n_answers: answers scored.
        parse_failures: unparseable judge replies behind those answers (``None`` in results
            saved before they were counted; then the key is not written back either).
    """

    method: str
    concept: Estimate
    instruct: Estimate
    fluency: Estimate
    overall: Estimate
    factors: dict[str, float | None]
    n_answers: int
    parse_failures: SavedParseFailures | None = None

    @classmethod
    def of(cls, score: MethodScore) -> "SavedMethodScore":
        """The saved form of ``score``."""
        return cls(
            method=score.method,
            concept=score.concept,
            instruct=score.instruct,
            fluency=score.fluency,
            overall=score.overall,
            factors=dict(score.factors),
            n_answers=score.n_answers,
            parse_failures=SavedParseFailures.of(score.parse_failures),
        )


@dataclass(frozen=True)
class UtilityResult:
    """One method's utility under steering.

    Attributes:
        accuracy: accuracy on the built-in utility items.
        kl: next-token KL (nats) from the unsteered model on neutral prompts (``None`` for the
            unsteered model itself).
    """

    accuracy: Estimate
    kl: Estimate | None


@dataclass(frozen=True)
class TrainingStep:
    """One logged training step (after the update), as the trainer records it."""

    step: int
    epoch: int
    loss: float
    alpha: float
    v_norm: float
    grad_norm_v: float
    grad_alpha: float
    lr_v: float
    lr_alpha: float


@dataclass(frozen=True)
class TrainingRun:
    """How one vector (PrOSV or FSSV) trained.

    Attributes:
        seconds: wall time of its training.
        log: every step's log entry, in order.
    """

    seconds: float
    log: tuple[TrainingStep, ...]

    @classmethod
    def of(cls, seconds: float, log: list[dict[str, Any]]) -> "TrainingRun":
        """From the trainer's per-step log dicts (:attr:`TrainResult.logs` of one concept)."""
        return cls(seconds, tuple(TrainingStep(**entry) for entry in log))


@dataclass(frozen=True)
class DemoResults(JsonResult):
    """A ``prosv demo`` run's summary: its folder's ``results.json``.

    Attributes:
        config: the run's :class:`~prosv_lens.experiments.demo.DemoConfig` as a JSON object
            (a record of what ran; a run saved before a setting existed lacks it, e.g.
            ``dtype``).
        model: the model id.
        layer: the steered block.
        concept: the concept's name.
        n_train: training examples used.
        judge: the judge's name (with its version and models).
        resid_norm: median residual norm at the layer (DiffMean's factor unit).
        diffmean_factor: DiffMean's factor chosen on the selection half (x ``resid_norm``).
        alphas: method -> the steering factor used (``None``: the prompt baseline).
        vector_norms: trained vector -> ``|v|``.
        steering: per-method steering scores on the test half, in the order evaluated.
        robustness: per-method scores on concept-suppressing prompts.
        utility: method -> KL damage and utility accuracy (with ``unsteered`` and the scaled
            FSSVs, e.g. ``fssv 80%``).
        training: trained vector -> its training time and log.
        figures: the figure files, relative to the run folder.
        seconds: stage (:data:`STAGES`) -> wall time (s), and ``total``; a saved file lists
            them by name (:meth:`stage_seconds` gives them in run order).
    """

    FORMAT_VERSION = 1
    WHAT = "a demo result (results.json of prosv demo)"

    config: dict[str, Any]
    model: str
    layer: int
    concept: str
    n_train: int
    judge: str
    resid_norm: float
    diffmean_factor: float
    alphas: dict[str, float | None]
    vector_norms: dict[str, float]
    steering: tuple[SavedMethodScore, ...]
    robustness: tuple[SavedMethodScore, ...]
    utility: dict[str, UtilityResult]
    training: dict[str, TrainingRun]
    figures: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object :meth:`save` writes (a score without ``parse_failures`` omits it)."""
        out = super().to_dict()
        for suite in ("steering", "robustness"):
            out[suite] = [
                {k: v for k, v in s.items() if not (k == "parse_failures" and v is None)}
                for s in out[suite]
            ]
        return out

    def by_method(self, suite: str = "steering") -> dict[str, SavedMethodScore]:
        """Method -> its score in ``suite`` (``steering`` or ``robustness``), in saved order."""
        if suite not in ("steering", "robustness"):
            raise ValueError(f"suite must be 'steering' or 'robustness', got {suite!r}")
        return {s.method: s for s in (self.steering if suite == "steering" else self.robustness)}

    def stage_seconds(self) -> list[tuple[str, float]]:
        """``(stage, seconds)`` in the order the stages ran (:data:`STAGES`), ``total`` last."""
        rank = {name: i for i, name in enumerate((*STAGES, "total"))}
        return sorted(self.seconds.items(), key=lambda kv: rank.get(kv[0], len(STAGES)))

    def with_report(self, figures: tuple[str, ...], seconds: dict[str, float]) -> "DemoResults":
        """A copy with the figure files and stage times (known once the report is drawn)."""
        return dataclasses.replace(self, figures=figures, seconds=dict(seconds))
