"""The saved scores of ``prosv axbench-eval``: its folder's ``scores.json``, typed.

:class:`AxBenchScores` is a :class:`JsonResult` (every field's type is checked on load, a
mismatch is one :class:`~prosv_lens.errors.ResultFileError` naming the file and field): one
:class:`~prosv_lens.experiments.demo_results.SavedMethodScore` per method, in the order judged.
The judged answers (``rows.jsonl``) are a row log, not part of it.

Before results were typed the file was the bare JSON list of those scores (such as the committed
``results/axbench_l10/scores.json``); such a file reads as version 1, its list being
:attr:`AxBenchScores.methods`. A file written now is an object, ``{"methods": [...],
"format_version": 1}``, the list unchanged inside it.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prosv_lens.evaluation.steering_eval import MethodScore
from prosv_lens.experiments.demo_results import SavedMethodScore
from prosv_lens.experiments.results import JsonResult


@dataclass(frozen=True)
class AxBenchScores(JsonResult):
    """A ``prosv axbench-eval`` run's per-method scores: its folder's ``scores.json``.

    Attributes:
        methods: one score per method (``unsteered``, ``prompt``, ``diffmean``, ``prosv``,
            ``fssv``), in the order judged; with several concepts each CI is a bootstrap over the
            concepts' means, and ``factors`` has one entry per concept.
    """

    FORMAT_VERSION = 1
    WHAT = "AxBench scores (scores.json of prosv axbench-eval)"

    methods: tuple[SavedMethodScore, ...]

    @classmethod
    def of(cls, scores: list[MethodScore]) -> "AxBenchScores":
        """The saved form of :func:`~prosv_lens.evaluation.steering_eval.summarize`'s scores."""
        return cls(tuple(SavedMethodScore.of(s) for s in scores))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object :meth:`save` writes (a score without ``parse_failures`` omits it)."""
        out = super().to_dict()
        out["methods"] = [
            {k: v for k, v in s.items() if not (k == "parse_failures" and v is None)}
            for s in out["methods"]
        ]
        return out

    @classmethod
    def from_dict(cls, data: Any, *, source: str | Path = "the result") -> "AxBenchScores":
        """The scores held in ``data``: a parsed ``scores.json``, object or (written before
        results were typed) bare list.

        Raises:
            ResultFileError: ``data`` is neither, has another format version, or a field is
                missing, unknown or of the wrong type (named as ``methods.<field>``).
        """
        if isinstance(data, list):
            data = {"methods": data}
        return super().from_dict(data, source=source)

    def by_method(self) -> dict[str, SavedMethodScore]:
        """Method -> its score, in saved order."""
        return {s.method: s for s in self.methods}

    @property
    def n_concepts(self) -> int:
        """The concepts behind each score (those in the first method's ``factors``)."""
        return len(self.methods[0].factors) if self.methods else 0


if TYPE_CHECKING:  # mypy checks that the figures can draw the saved scores
    from prosv_lens.figures.evaluation import SavedScore

    _DRAWABLE: type[SavedScore] = SavedMethodScore
