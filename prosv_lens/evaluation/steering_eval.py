"""Steering evaluation as AxBench does it: generate on held-out instructions, judge, summarise.

For each concept and method the model answers held-out instructions (sampled, temperature 1.0 by
default, as the paper), and a :class:`~prosv_lens.evaluation.judges.Judge` rates each answer for
concept, instruction relevance and fluency. Methods that need a factor (DiffMean, classic SV) are
given several candidates: the factor is selected on the first half of the instructions (mean
harmonic score) and only the second half is scored, as AxBench does; every method is scored on the
same second half. Jointly trained vectors have one candidate (their learned factor) and need no
selection, which is the paper's point.

Every judged answer is one row of a :class:`~prosv_lens.evaluation.records.ResultLog`; a rerun
skips the rows already there, so a killed evaluation resumes without losing or repeating rows.
The same runner scores robustness: the model answers a suppression prompt while the judge rates
the answer against the original instruction (:class:`EvalTask` keeps both).

Judge replies that could not be parsed are rated 0 (AxBench's rule); the summaries count them per
criterion and report the rate (:class:`~prosv_lens.evaluation.judges.ParseFailures`), so a run
scored by a judge that answered nothing usable cannot pass for a normal one. (The LLM judge also
stops the run above its ``max_parse_failure_rate``.)
"""

import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from prosv_lens.baselines import STEERING_PROMPT, prompt_steered
from prosv_lens.errors import ConfigError
from prosv_lens.evaluation.judges import CRITERIA, Judge, JudgeItem, ParseFailures, Rating
from prosv_lens.evaluation.records import ResultLog
from prosv_lens.evaluation.stats import Estimate, bootstrap_mean
from prosv_lens.generation import GenerationConfig, generate
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import LoadedModel
from prosv_lens.validate import in_range, integer

KEY_FIELDS = ("suite", "concept", "method", "factor", "instruction_id")


@dataclass(frozen=True)
class EvalConfig:
    """Sampling and splitting settings.

    Attributes:
        max_new_tokens: answer length (the paper judges 128 tokens; the default is sized for CPU).
        temperature: sampling temperature (the paper: 1.0).
        batch_size: answers generated per forward batch.
        seed: base seed; each (method, factor, batch) gets its own derived seed.
        select_fraction: share of the instructions used to select factors (AxBench: 0.5).
        backend: generation backend (:class:`~prosv_lens.generation.GenerationConfig`): ``auto``
            (default) runs the Hugging Face model's own ``generate`` on a GPU and the bridge loop
            on a CPU.
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    batch_size: int = 16
    seed: int = 0
    select_fraction: float = 0.5
    backend: str = "auto"

    def __post_init__(self) -> None:
        """Raises ConfigError (a ValueError) naming the field and its value; NaN/inf refused."""
        integer("max_new_tokens", self.max_new_tokens, 1)
        integer("batch_size", self.batch_size, 1)
        in_range(
            "temperature", self.temperature, 0.0, low_open=True, hint="the paper samples at 1.0"
        )
        in_range(
            "select_fraction",
            self.select_fraction,
            0.0,
            1.0,
            low_open=True,
            high_open=True,
            hint="AxBench selects on half: 0.5",
        )


@dataclass(frozen=True)
class EvalTask:
    """One instruction to answer: ``prompt`` is sent to the model, ``instruction`` is what the
    judge rates relevance against (they differ for robustness: the prompt is the attack)."""

    instruction_id: int
    instruction: str
    prompt: str


def tasks_from(instructions: Sequence[str]) -> list[EvalTask]:
    """Plain tasks: the model answers each instruction itself."""
    return [EvalTask(i, s, s) for i, s in enumerate(instructions)]


@dataclass(frozen=True)
class Method:
    """A way to steer: candidate vectors keyed by factor, and/or a steering prompt.

    Use the constructors: :meth:`unsteered`, :meth:`prompt`, :meth:`vector`, :meth:`factor_search`.
    """

    name: str
    candidates: tuple[tuple[float | None, SteeringVector | None], ...]
    steering_prompt: str | None = None

    def __post_init__(self) -> None:
        if not self.candidates:
            raise ValueError(f"method {self.name!r} has no candidates")
        factors = [f for f, _ in self.candidates]
        if len(set(factors)) != len(factors):
            raise ValueError(f"method {self.name!r} has repeated factors {factors}")

    @property
    def needs_selection(self) -> bool:
        return len(self.candidates) > 1

    @classmethod
    def unsteered(cls, name: str = "unsteered") -> "Method":
        return cls(name, ((None, None),))

    @classmethod
    def prompt(cls, name: str = "prompt", template: str = STEERING_PROMPT) -> "Method":
        """The prompt baseline: ``"{template}\\n\\nQuestion: {prompt}"`` (``{concept}`` filled)."""
        if "{concept}" not in template:
            raise ConfigError("the steering prompt template needs a {concept} field: add it")
        return cls(name, ((None, None),), template)

    @classmethod
    def vector(cls, name: str, vector: SteeringVector) -> "Method":
        """One vector at its own factor (jointly trained vectors: no selection)."""
        return cls(name, ((None, vector),))

    @classmethod
    def factor_search(
        cls, name: str, vector: SteeringVector, factors: Sequence[float], *, unit: float = 1.0
    ) -> "Method":
        """``vector`` with ``alpha = factor * unit`` for each factor; selected on held-out data."""
        return cls(name, tuple((float(f), vector.replace(alpha=f * unit)) for f in factors))

    def render(self, prompt: str, concept: str) -> str:
        if self.steering_prompt is None:
            return prompt
        return prompt_steered([prompt], concept, self.steering_prompt)[0]


def split_tasks(
    tasks: Sequence[EvalTask], cfg: EvalConfig
) -> tuple[list[EvalTask], list[EvalTask]]:
    """(selection half, test half): the first ``select_fraction`` of the tasks and the rest."""
    n_select = int(round(len(tasks) * cfg.select_fraction))
    if n_select < 1 or n_select >= len(tasks):
        raise ValueError(f"{len(tasks)} instructions cannot be split {cfg.select_fraction:.0%}")
    return list(tasks[:n_select]), list(tasks[n_select:])


def evaluate_steering(
    model: LoadedModel,
    concept: str,
    methods: Sequence[Method],
    tasks: Sequence[EvalTask],
    judge: Judge,
    log: ResultLog,
    cfg: EvalConfig | None = None,
    *,
    suite: str = "steering",
    split: bool = True,
) -> list[dict]:
    """Generate, judge and store every (method, factor, instruction) row not yet in ``log``.

    Args:
        model: the model being steered (weights never modified).
        concept: the concept the judge looks for (and the prompt baseline asks for).
        methods: the methods to compare.
        tasks: the held-out instructions; the first ``select_fraction`` select factors, the rest
            are scored for every method.
        judge: rates the answers; its ``check()`` runs before any generation.
        log: where rows go (create with ``ResultLog(path, KEY_FIELDS)``).
        cfg: sampling and split settings.
        suite: a label separating e.g. ``"steering"`` from ``"robustness"`` rows in one file.
        split: ``False`` scores every task (no selection half; e.g. robustness of vectors whose
            factor was already chosen); methods that need selection are then refused.

    Returns:
        This suite's rows for ``concept`` (old and new) of the given methods.
    """
    cfg = cfg or EvalConfig()
    if split:
        select, test = split_tasks(tasks, cfg)
    else:
        select, test = [], list(tasks)
        if any(m.needs_selection for m in methods):
            raise ValueError("split=False: every method must have one candidate (no selection)")
    judge.check()
    for method in methods:
        if method.needs_selection:
            for factor, vector in method.candidates:
                _run(
                    model, concept, method, factor, vector, select, "select", judge, log, cfg, suite
                )
            factor = selected_factor(log.rows, concept, method.name, suite)
            vector = dict(method.candidates)[factor]
        else:
            factor, vector = method.candidates[0]
        _run(model, concept, method, factor, vector, test, "test", judge, log, cfg, suite)
    names = {m.name for m in methods}
    return [
        r
        for r in log.rows
        if r["suite"] == suite and r["concept"] == concept and r["method"] in names
    ]


def _run(
    model: LoadedModel,
    concept: str,
    method: Method,
    factor: float | None,
    vector: SteeringVector | None,
    tasks: Sequence[EvalTask],
    split: str,
    judge: Judge,
    log: ResultLog,
    cfg: EvalConfig,
    suite: str,
) -> None:
    todo = [
        t
        for t in tasks
        if not log.has(
            suite=suite,
            concept=concept,
            method=method.name,
            factor=factor,
            instruction_id=t.instruction_id,
        )
    ]
    for s in range(0, len(todo), cfg.batch_size):
        part = todo[s : s + cfg.batch_size]
        seed = zlib.crc32(
            f"{cfg.seed}|{suite}|{concept}|{method.name}|{factor}|{part[0].instruction_id}".encode()
        )
        gen_cfg = GenerationConfig(
            max_new_tokens=cfg.max_new_tokens,
            do_sample=True,
            temperature=cfg.temperature,
            seed=seed,
            backend=cfg.backend,
        )
        prompts = [method.render(t.prompt, concept) for t in part]
        out = generate(model, prompts, () if vector is None else vector, gen_cfg)
        ratings = judge.rate(
            [JudgeItem(t.instruction, r, concept) for t, r in zip(part, out.texts, strict=True)]
        )
        log.append(
            {
                "suite": suite,
                "concept": concept,
                "method": method.name,
                "factor": factor,
                "instruction_id": t.instruction_id,
                "split": split,
                "instruction": t.instruction,
                "prompt": p,
                "response": text,
                "n_tokens": n,
                "alpha": None if vector is None else float(vector.alpha),
                "positions": None if vector is None else str(vector.positions),
                "judge": judge.name,
                "seed": seed,
                **rating_fields(rating),
            }
            for t, p, text, n, rating in zip(
                part, prompts, out.texts, out.lengths, ratings, strict=True
            )
        )


def rating_fields(rating: Rating) -> dict:
    """A rating as row fields: ``score_concept``, ``score_instruct``, ``score_fluency``,
    ``overall`` and ``judge_details`` (``concept`` names the concept in a row)."""
    return {
        **{f"score_{k}": getattr(rating, k) for k in CRITERIA},
        "overall": rating.overall,
        "judge_details": rating.details,
    }


def selected_factor(
    rows: Sequence[dict], concept: str, method: str, suite: str = "steering"
) -> float | None:
    """The factor with the best mean overall score on the selection split (ties: the smaller)."""
    scores: dict[float | None, list[float]] = defaultdict(list)
    for r in rows:
        if (r["suite"], r["concept"], r["method"], r["split"]) == (
            suite,
            concept,
            method,
            "select",
        ):
            scores[r["factor"]].append(r["overall"])
    if not scores:
        raise ValueError(f"no selection rows for {method!r} on {concept!r} in suite {suite!r}")
    return max(
        sorted(scores, key=lambda f: (f is not None, f)),
        key=lambda f: sum(scores[f]) / len(scores[f]),
    )


@dataclass(frozen=True)
class MethodScore:
    """A method's test-split scores: one :class:`Estimate` per criterion and for the overall score.

    The CI is a bootstrap over concepts (each concept's mean over its answers) when there are
    several concepts, as AxBench reports, and over answers when there is one.
    ``parse_failures`` counts the judge replies behind these answers that could not be parsed
    (rated 0).
    """

    method: str
    concept: Estimate
    instruct: Estimate
    fluency: Estimate
    overall: Estimate
    factors: dict[str, float | None]
    n_answers: int
    parse_failures: ParseFailures = field(default_factory=ParseFailures)

    def to_dict(self) -> dict:
        out = {k: getattr(self, k).to_dict() for k in (*CRITERIA, "overall")}
        return {
            "method": self.method,
            **out,
            "factors": self.factors,
            "n_answers": self.n_answers,
            "parse_failures": self.parse_failures.to_dict(),
        }


def judge_parse_failures(rows: Sequence[dict], suite: str | None = None) -> ParseFailures:
    """Unparseable judge replies over the rows of ``suite`` (every suite if None), both splits."""
    return ParseFailures.count(
        r.get("judge_details") for r in rows if suite is None or r["suite"] == suite
    )


def summarize(rows: Sequence[dict], suite: str = "steering") -> list[MethodScore]:
    """Per-method scores on the test split of ``suite``, in first-seen method order."""
    test = [r for r in rows if r["suite"] == suite and r["split"] == "test"]
    methods = list(dict.fromkeys(r["method"] for r in test))
    scores = []
    for m in methods:
        mine = [r for r in test if r["method"] == m]
        concepts = list(dict.fromkeys(r["concept"] for r in mine))
        est = {}
        for name in (*CRITERIA, "overall"):
            column = name if name == "overall" else f"score_{name}"
            if len(concepts) > 1:
                per = [[r[column] for r in mine if r["concept"] == c] for c in concepts]
                est[name] = bootstrap_mean([sum(p) / len(p) for p in per])
            else:
                est[name] = bootstrap_mean([r[column] for r in mine])
        factors = {c: next(r["factor"] for r in mine if r["concept"] == c) for c in concepts}
        failures = ParseFailures.count(r.get("judge_details") for r in mine)
        scores.append(
            MethodScore(m, **est, factors=factors, n_answers=len(mine), parse_failures=failures)
        )
    return scores


def format_scores(scores: Sequence[MethodScore]) -> str:
    """A markdown table: concept / instruct / fluency / overall with 95% CIs per method, and the
    share of judge replies that could not be parsed (rated 0)."""
    lines = [
        "| method | concept | instruct | fluency | overall | factor | n | unparsed replies |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        factors = ", ".join("-" if f is None else f"{f:g}" for f in s.factors.values())
        cells = " | ".join(str(getattr(s, k)) for k in (*CRITERIA, "overall"))
        pf = s.parse_failures
        unparsed = f"{pf.rate:.1%} ({pf.failed}/{pf.replies})"
        lines.append(f"| {s.method} | {cells} | {factors} | {s.n_answers} | {unparsed} |")
    return "\n".join(lines)
