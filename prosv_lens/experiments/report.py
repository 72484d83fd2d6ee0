"""Text and results a reproduce run shows: the dry-run plan, per-concept results (a
:class:`~prosv_lens.experiments.reproduce_results.ConceptResult`), the summary (a
:class:`~prosv_lens.experiments.reproduce_results.ReproduceSummary`) and its markdown."""

from collections.abc import Mapping, Sequence

from prosv_lens.concepts import AxBenchTrainingSet
from prosv_lens.evaluation.judges import CRITERIA, ParseFailures
from prosv_lens.evaluation.stats import Estimate, bootstrap_mean
from prosv_lens.evaluation.steering_eval import judge_parse_failures, summarize
from prosv_lens.experiments.demo_results import SavedMethodScore, SavedParseFailures
from prosv_lens.experiments.plan import (
    EFFICIENCY,
    GB,
    GPU_STEP_OVERHEAD,
    PROMPT_TOKENS,
    USABLE,
    Plan,
)
from prosv_lens.experiments.reproduce_results import (
    ConceptResult,
    ConceptScore,
    ConceptUtility,
    ReproduceSummary,
    SummaryMethod,
    TrainRecord,
    UnsteeredUtility,
)
from prosv_lens.experiments.settings import Setting
from prosv_lens.interventions import SteeringVector

METHODS = ("unsteered", "prompt", "diffmean", "prosv", "fssv")
SCORES = (*CRITERIA, "overall")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_plan(plan: Plan, notes: Sequence[str] = ()) -> str:
    """The dry-run text: one table row per stage, the device, the assumptions, the verdict."""
    s, dev = plan.setting, plan.device
    lines = [
        f"plan for {s.name}: {s.shape.n_params / 1e9:.2f} B parameters in {s.dtype}, layer "
        f"{s.layer}, {plan.n_concepts} concepts x {plan.sizes.n_train} examples, "
        f"judge {plan.judge}",
        f"device: {dev.type} ({dev.name}): {dev.memory / GB:.1f} GB available of "
        f"{dev.total / GB:.1f} GB; matmul {dev.flops / 1e12:.3g} TFLOP/s, copies "
        f"{dev.bandwidth / GB:.3g} GB/s ({dev.how})",
        "",
        "| stage | runs | peak memory | of which (GB) | est. time |",
        "|---|---|---|---|---|",
    ]
    for st in plan.stages:
        parts = ", ".join(f"{k} {v / GB:.2f}" for k, v in st.memory.items() if v >= 0.005 * GB)
        flag = "" if st.peak <= plan.usable else " **does not fit**"
        total = st.seconds * st.count if st.seconds is not None else None
        each = f" ({_duration(st.seconds)} each)" if st.count > 1 else ""
        lines.append(
            f"| {st.name} | {st.runs} | {st.peak / GB:.2f} GB{flag} | {parts} | "
            f"{_duration(total)}{each} |"
        )
    peak = max(st.peak for st in plan.stages)
    lines.append(f"| **total** | | max {peak / GB:.2f} GB | | **{_duration(plan.seconds)}** |")
    lines += [
        "",
        "These are estimates, not measurements. Memory: weights = parameters x dtype bytes; "
        "residual cache = training tokens x d_model x 4 bytes, capped by --cache-budget-mb (the "
        "rest is memory-mapped on disk); training activations per micro-batch row = its tokens x "
        "the blocks above the layer x (q, k, v, MLP and attention-score tensors); response logits "
        "capped by --logits-budget-mb; KV cache = 2 x layers x kv heads x head_dim x tokens x rows "
        f"x dtype bytes; prompts assumed {PROMPT_TOKENS} tokens. Time: FLOPs of the weight "
        f"matmuls and attention / ({EFFICIENCY:.0%} of the matmul rate above); each decoding "
        "step takes at least the time to stream the weights once at the copy bandwidth above "
        f"(on a GPU plus {GPU_STEP_OVERHEAD * 1e3:.1f} ms per layer of launch overhead, a "
        "judgement); "
        "the model load and an LLM judge's network time are not estimated.",
        f"A stage fits if its peak is at most {USABLE:.0%} of the available memory "
        f"({plan.usable / GB:.1f} GB).",
        *notes,
    ]
    return "\n".join(lines)


def _train_record(vec: SteeringVector) -> TrainRecord:
    log = vec.info.get("train_log") or []
    return TrainRecord(
        steps=len(log),
        loss_first=log[0]["loss"] if log else None,
        loss_last=log[-1]["loss"] if log else None,
    )


def concept_result(
    ts: AxBenchTrainingSet,
    data_sha256: str,
    rows: Sequence[dict],
    factor: float | None,
    chosen: Mapping[str, SteeringVector | None],
    utility: ConceptUtility,
    seconds: Mapping[str, float],
) -> ConceptResult:
    """A finished concept: scores over its test answers (CIs over answers), DiffMean's selected
    factor, each vector's factor and norm, training losses, utility and stage times."""
    mine = [r for r in rows if r["concept"] == ts.concept]
    return ConceptResult(
        concept_id=ts.concept_id,
        concept=ts.concept,
        genre=ts.genre,
        data_sha256=data_sha256,
        diffmean_factor=factor,
        scores=tuple(SavedMethodScore.of(s) for s in summarize(mine)),
        alphas={k: None if v is None else float(v.alpha) for k, v in chosen.items()},
        v_norms={k: float(v.v.norm()) for k, v in chosen.items() if v is not None},
        train={k: _train_record(v) for k in ("prosv", "fssv") if (v := chosen[k]) is not None},
        utility=dict(utility.methods),
        seconds=dict(seconds),
    )


def _over_concepts(values: Sequence[Estimate]) -> Estimate:
    """One concept: its own estimate; several: a bootstrap over the concepts' means."""
    if len(values) == 1:
        return values[0]
    return bootstrap_mean([v.mean for v in values])


def build_summary(
    setting: Setting,
    fingerprint: dict,
    results: Sequence[ConceptResult],
    rows: Sequence[dict],
    unsteered_utility: UnsteeredUtility,
) -> ReproduceSummary:
    """The per-setting table: each method's judged scores (CIs over concepts when there are
    several) and utility, each concept's scores per method, and the judge replies that could not
    be parsed (rated 0) over every judged row, selection half included."""
    scores = {s.method: SavedMethodScore.of(s) for s in summarize(rows)}
    methods = []
    for m in [m for m in METHODS if m in scores] + [m for m in scores if m not in METHODS]:
        kl: Estimate | None
        if m == "unsteered":
            acc, kl = unsteered_utility.accuracy, None
        else:
            acc = _over_concepts([r.utility[m].accuracy for r in results])
            kls = [r.utility[m].kl for r in results]
            kl = _over_concepts([k for k in kls if k is not None]) if None not in kls else None
        alphas = [a for r in results if (a := r.alphas.get(m)) is not None]
        s = scores[m]
        methods.append(
            SummaryMethod(
                method=s.method,
                concept=s.concept,
                instruct=s.instruct,
                fluency=s.fluency,
                overall=s.overall,
                factors=s.factors,
                n_answers=s.n_answers,
                utility_accuracy=acc,
                kl=kl,
                alpha_mean=sum(alphas) / len(alphas) if alphas else None,
                parse_failures=s.parse_failures,
            )
        )
    return ReproduceSummary(
        setting=setting.name,
        model=fingerprint["model"],
        dtype=fingerprint["dtype"],
        layer=fingerprint["layer"],
        data_source=fingerprint["data_source"],
        judge=fingerprint["judge"],
        concepts=tuple((r.concept_id, r.concept) for r in results),
        methods=tuple(methods),
        per_concept=tuple(
            ConceptScore.of(r.concept_id, r.concept, s) for r in results for s in r.scores
        ),
        fingerprint=fingerprint,
        judge_parse_failures=SavedParseFailures.of(judge_parse_failures(rows)),
    )


def _est(e: Estimate | None, digits: int = 3) -> str:
    if e is None:
        return "-"
    return f"{e.mean:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def _unparsed(pf: SavedParseFailures | None) -> str:
    return "-" if pf is None else f"{pf.rate:.1%} ({pf.failed}/{pf.replies})"


def _parse_failure_line(pf: SavedParseFailures | None) -> str:
    if pf is None:  # a summary written before parse failures were counted
        return "Judge replies that could not be parsed: not recorded in this summary."
    counts = ParseFailures(pf.replies, pf.by_criterion)
    return f"Judge: {counts.describe()} (AxBench's rule); all judged rows, selection half included."


def format_summary(summary: ReproduceSummary) -> str:
    """The summary as markdown: the method table (with each method's unparseable judge replies),
    the overall unparseable-reply line, then method x concept."""
    n = len(summary.concepts)
    over = "over concepts" if n > 1 else "over answers"
    lines = [
        f"# prosv reproduce {summary.setting}",
        "",
        f"{summary.model} ({summary.dtype}), layer {summary.layer}, {n} concepts from "
        f"{summary.data_source}; judge {summary.judge}. Scores 0-2 on the test half of the "
        f"held-out instructions; 95% bootstrap CIs {over}. Utility: built-in task accuracy and "
        "KL damage (nats) under each method; DiffMean at its selected factor.",
        "",
        "| method | concept | instruct | fluency | **overall** | utility accuracy | KL damage | "
        "mean alpha | answers | unparsed replies |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in summary.methods:
        alpha = "-" if m.alpha_mean is None else f"{m.alpha_mean:.1f}"
        cells = " | ".join(_est(getattr(m, k)) for k in CRITERIA)
        lines.append(
            f"| {m.method} | {cells} | **{_est(m.overall)}** | "
            f"{_est(m.utility_accuracy)} | {_est(m.kl)} | {alpha} | {m.n_answers} | "
            f"{_unparsed(m.parse_failures)} |"
        )
    lines += ["", _parse_failure_line(summary.judge_parse_failures)]
    lines += [
        "",
        "## Per concept",
        "",
        "| id | concept | method | concept | instruct | fluency | overall | factor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.per_concept:
        factor = next(iter(r.factors.values()), None)
        lines.append(
            f"| {r.concept_id} | {r.concept_name[:48]} | {r.method} | "
            + " | ".join(_est(getattr(r, k), 2) for k in SCORES)
            + f" | {'-' if factor is None else f'{factor:g}'} |"
        )
    return "\n".join(lines) + "\n"
