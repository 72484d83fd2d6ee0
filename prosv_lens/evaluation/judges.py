"""The judge interface: (instruction, response, concept) -> three ratings and their harmonic mean.

Every judge (the LLM judge over an OpenAI-compatible endpoint, the validated offline judge) rates
each response on AxBench's three criteria, each on the 0/1/2 scale:

* **concept**: is the concept clearly present in the response?
* **instruct**: does the response address the instruction?
* **fluency**: is it well-formed, non-repetitive language?

The per-response score is their harmonic mean, 0 if any rating is 0 (AxBench's rule), so a
response must do all three to score.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass

CRITERIA = ("concept", "instruct", "fluency")


@dataclass(frozen=True)
class JudgeItem:
    """One response to rate: the instruction it answers, the text, and the concept to look for."""

    instruction: str
    response: str
    concept: str


@dataclass(frozen=True)
class Rating:
    """Three ratings in [0, 2] (fractions allowed) and their harmonic mean.

    Attributes:
        concept / instruct / fluency: the three criteria (0 = no, 1 = somewhat, 2 = clearly).
        details: judge-specific evidence (raw scores, parsed text), JSON-serialisable.
    """

    concept: float
    instruct: float
    fluency: float
    details: dict | None = None

    def __post_init__(self) -> None:
        for name in CRITERIA:
            value = getattr(self, name)
            if not 0.0 <= value <= 2.0:
                raise ValueError(f"rating {name}={value} is outside [0, 2]")

    @property
    def overall(self) -> float:
        """Harmonic mean of the three ratings; 0 if any of them is 0."""
        return harmonic_mean(self.concept, self.instruct, self.fluency)

    def to_dict(self) -> dict:
        return {**asdict(self), "overall": self.overall}

    @classmethod
    def from_dict(cls, data: dict) -> "Rating":
        return cls(
            float(data["concept"]), float(data["instruct"]), float(data["fluency"]),
            data.get("details"),
        )  # fmt: skip


def harmonic_mean(*ratings: float) -> float:
    """``n / sum(1/r)``, and 0 when any rating is 0 (AxBench's rule)."""
    if any(r <= 0 for r in ratings):
        return 0.0
    return len(ratings) / sum(1.0 / r for r in ratings)


class Judge(ABC):
    """Rates responses. Subclasses set :attr:`name` (identifies the judge and its settings in
    result files and caches) and implement :meth:`rate`; :meth:`check` fails fast, before any
    work starts, when the judge cannot run."""

    name: str = "judge"

    def check(self) -> None:  # noqa: B027 - optional hook; most judges need no check
        """Raise :class:`~prosv_lens.errors.JudgeError` if the judge cannot run."""

    @abstractmethod
    def rate(self, items: Sequence[JudgeItem]) -> list[Rating]:
        """One :class:`Rating` per item, in order."""
