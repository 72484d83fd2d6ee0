"""The judge interface: (instruction, response, concept) -> three ratings and their harmonic mean.

Every judge (the LLM judge over an OpenAI-compatible endpoint, the validated offline judge) rates
each response on AxBench's three criteria, each on the 0/1/2 scale:

* **concept**: is the concept clearly present in the response?
* **instruct**: does the response address the instruction?
* **fluency**: is it well-formed, non-repetitive language?

The per-response score is their harmonic mean, 0 if any rating is 0 (AxBench's rule), so a
response must do all three to score.

A judge that reads its ratings out of free text (the LLM judge) lists the criteria whose reply it
could not parse under ``details["parse_failures"]``; those count as 0, AxBench's rule, so they
must be counted and reported (:class:`ParseFailures`) or a judge that answers nothing usable would
pass for a run where nothing steers. Judges that compute their ratings never fail to parse.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

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
        details: judge-specific evidence (raw scores, parsed text), JSON-serialisable; a judge
            that parses replies lists the criteria it could not parse (rated 0) under
            ``"parse_failures"``.
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

    @property
    def parse_failures(self) -> tuple[str, ...]:
        """The criteria whose judge reply could not be parsed (rated 0); empty for most judges."""
        return _parse_failures(self.details)

    def to_dict(self) -> dict:
        return {**asdict(self), "overall": self.overall}

    @classmethod
    def from_dict(cls, data: dict) -> "Rating":
        return cls(
            float(data["concept"]),
            float(data["instruct"]),
            float(data["fluency"]),
            data.get("details"),
        )


def _parse_failures(details: Mapping | None) -> tuple[str, ...]:
    if not isinstance(details, Mapping):
        return ()
    return tuple(c for c in details.get("parse_failures") or () if c in CRITERIA)


@dataclass(frozen=True)
class ParseFailures:
    """How many judge replies could not be parsed, per criterion and overall.

    Attributes:
        replies: replies counted: one per criterion of each rated answer.
        by_criterion: unparseable replies per criterion (each criterion present, 0 included).
    """

    replies: int = 0
    by_criterion: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(CRITERIA, 0))

    @property
    def failed(self) -> int:
        return sum(self.by_criterion.values())

    @property
    def rate(self) -> float:
        """``failed / replies``; 0 when nothing was counted."""
        return self.failed / self.replies if self.replies else 0.0

    @classmethod
    def count(cls, details: Iterable[Mapping | None]) -> "ParseFailures":
        """Counted over ratings' ``details`` (or result rows' ``judge_details``), one per answer;
        details without ``parse_failures`` (a judge that never fails to parse) count as parsed."""
        by = dict.fromkeys(CRITERIA, 0)
        n = 0
        for d in details:
            n += 1
            for criterion in _parse_failures(d):
                by[criterion] += 1
        return cls(n * len(CRITERIA), by)

    def to_dict(self) -> dict:
        return {
            "replies": self.replies,
            "failed": self.failed,
            "rate": self.rate,
            "by_criterion": dict(self.by_criterion),
        }

    def describe(self) -> str:
        """One line: ``3 of 36 judge replies (8.3%) could not be parsed (concept 2, ...)``."""
        parts = ", ".join(f"{c} {self.by_criterion.get(c, 0)}" for c in CRITERIA)
        return (
            f"{self.failed} of {self.replies} judge replies ({self.rate:.1%}) could not be parsed "
            f"and were rated 0 ({parts})"
        )


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
