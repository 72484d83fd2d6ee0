"""The saved result of a hyper-parameter sweep: one concept's ``sweep.json``, typed.

:class:`SweepResult` is what :func:`~prosv_lens.experiments.sweeps.execute_sweep` assembles per
concept from the completed work units (a :class:`JsonResult`: every field's type is checked on
load, a mismatch is one :class:`~prosv_lens.errors.ResultFileError` naming the file and field).
The judged answers (``rows.jsonl``) are a row log, not part of it. The layout is the one written
before results were typed, plus ``format_version``; a file without it (such as the committed
``results/heatmap_small/sweep.json``) reads as version 1.

A cell is one trained vector. A heatmap cell carries the labels ``optimizer``, ``beta`` and
``lr_alpha``, a position-sweep cell ``positions``; a cell whose training diverged carries its
error in ``diverged`` and no measurements. Labels and measurements a cell lacks are ``None`` and
are not written to the file.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prosv_lens.evaluation.stats import Estimate
from prosv_lens.experiments.results import JsonResult

CRITERIA = ("concept", "instruct", "fluency", "overall")
"""The judged scores of a baseline or cell (the keys of its ``scores``), each 0-2."""

_ALWAYS_WRITTEN = ("diverged",)  # a cell field written even when None


@dataclass(frozen=True)
class SweepBaseline:
    """The unsteered model on the concept's held-out data and eval instructions.

    Attributes:
        heldout_loss: mean per-example response NLL on the held-out examples.
        scores: criterion (:data:`CRITERIA`) -> judged score with its 95% bootstrap CI.
        n_answers: answers judged.
    """

    heldout_loss: float
    scores: dict[str, Estimate]
    n_answers: int


@dataclass(frozen=True)
class SweepCell:
    """One cell of a sweep: a vector trained with one setting, and what it measured.

    Attributes:
        key: the cell's name (``adam beta=2 lr_alpha=10``, or the position spec); the judged
            answers in ``rows.jsonl`` carry it as their method.
        train_config: the :class:`~prosv_lens.training.TrainConfig` it trained with, as a JSON
            object.
        diverged: the training error if it diverged (then every measurement is ``None``),
            else ``None``.
        seconds: stage (``train``, ``heldout``, ``eval``) -> wall time (s).
        optimizer / beta / lr_alpha: a heatmap cell's labels (``None`` in a position sweep).
        positions: a position-sweep cell's position spec (``None`` in a heatmap).
        train_loss_first: the first training step's loss.
        train_loss_final: mean training loss over the last epoch's steps.
        heldout_loss: mean per-example response NLL on the held-out examples.
        alpha: the learned factor.
        v_norm: ``|v|`` of the trained direction.
        steps: optimizer steps taken.
        scores: criterion (:data:`CRITERIA`) -> judged score with its 95% bootstrap CI.
        n_answers: answers judged.
    """

    key: str
    train_config: dict[str, Any]
    diverged: str | None
    seconds: dict[str, float]
    optimizer: str | None = None
    beta: float | None = None
    lr_alpha: float | None = None
    positions: str | None = None
    train_loss_first: float | None = None
    train_loss_final: float | None = None
    heldout_loss: float | None = None
    alpha: float | None = None
    v_norm: float | None = None
    steps: int | None = None
    scores: dict[str, Estimate] | None = None
    n_answers: int | None = None

    def score(self, criterion: str = "overall") -> Estimate:
        """The judged score for ``criterion`` (:data:`CRITERIA`).

        Raises:
            ValueError: the cell diverged (it has no scores) or ``criterion`` is unknown.
        """
        if self.scores is None:
            raise ValueError(f"sweep cell {self.key!r} diverged: it has no scores")
        if criterion not in self.scores:
            raise ValueError(f"unknown criterion {criterion!r}; one of {sorted(self.scores)}")
        return self.scores[criterion]


@dataclass(frozen=True)
class SweepResult(JsonResult):
    """One concept's sweep: the folder's ``sweep.json`` (``concept_<id>/sweep.json`` in a sweep
    over many AxBench concepts).

    Attributes:
        kind: ``heatmap`` (factor init x factor LR) or ``positions`` (one cell per spec).
        config: the sweep's config as a JSON object (see
            :meth:`~prosv_lens.experiments.sweeps.HeatmapConfig.to_dict`; a sweep saved before
            a setting existed lacks it).
        model: the model id.
        judge: the judge's name.
        concept: the concept's name.
        layer: the steered block.
        baseline: the unsteered model (``None`` until its unit is done).
        cells: the finished cells, in config order.
    """

    FORMAT_VERSION = 1
    WHAT = "a sweep result (sweep.json of prosv sweep)"

    kind: str
    config: dict[str, Any]
    model: str
    judge: str
    concept: str
    layer: int
    baseline: SweepBaseline | None
    cells: tuple[SweepCell, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object :meth:`save` writes (a cell's ``None`` labels and measurements are
        left out, as before results were typed)."""
        out = super().to_dict()
        out["cells"] = [
            {k: v for k, v in c.items() if v is not None or k in _ALWAYS_WRITTEN}
            for c in out["cells"]
        ]
        return out

    def cell(self, key: str) -> SweepCell:
        """The cell named ``key``.

        Raises:
            KeyError: no finished cell has that key.
        """
        for c in self.cells:
            if c.key == key:
                return c
        raise KeyError(f"no cell {key!r} in the sweep of {self.concept!r}")


if TYPE_CHECKING:  # mypy checks that the figures can draw a SweepResult
    from prosv_lens.figures.sweeps import SavedSweep

    _DRAWABLE: type[SavedSweep] = SweepResult
