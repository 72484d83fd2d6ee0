"""The reproduction report: each claim of the paper against saved results.

:func:`build_report` reads what the experiments saved under a results folder (no model), in the
sub-folders a :class:`ResultFolders` names (the command line passes this repository's layout):

* ``demo`` (``prosv demo``): ``results.json`` and the judged answers ``rows.jsonl``;
* ``axbench`` (``prosv axbench-eval``): ``scores.json`` and ``rows.jsonl``;
* ``heatmaps`` and ``positions`` (``prosv sweep``): ``sweep.json`` and ``rows.jsonl`` each;
* ``attention`` (``prosv analyse``): ``patching``, for the mechanism section;

and writes one section per claim: what the paper says, the numbers here with 95% bootstrap CIs,
and a verdict by a fixed rule (:data:`VERDICTS`), so the report cannot be more optimistic than the
data. Differences in judged scores are *paired*: the two methods answered the same instructions,
so the CI is a bootstrap over instructions of the per-instruction difference. Where only
per-method estimates were saved (utility accuracy and KL), two estimates count as different only
when their CIs do not overlap (a conservative rule). A missing result gives the verdict
``no result`` and the command that makes it.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prosv_lens.analysis import PathPatchingResult
from prosv_lens.errors import ClaimsError, ProsvError, ResultFileError  # noqa: F401 - re-exported
from prosv_lens.evaluation.stats import Estimate, bootstrap_mean
from prosv_lens.experiments.axbench_results import AxBenchScores
from prosv_lens.experiments.demo_results import DemoResults
from prosv_lens.experiments.sweep_results import SweepBaseline, SweepResult
from prosv_lens.safe_io import parse_jsonl_text, read_text_file

VERDICTS = {
    "reproduces": "the difference has the paper's sign and its 95% CI excludes 0",
    "same sign, not significant": "the point estimate has the paper's sign; the CI includes 0",
    "not reproduced": "the point estimate has the opposite sign (or is 0); the CI includes 0",
    "contradicted": "the opposite sign, with a CI that excludes 0",
    "no result": "the saved result is missing (the section names the command that makes it)",
}


@dataclass(frozen=True)
class ResultFolders:
    """Where each experiment saved its results, as sub-folders of the results folder.

    Attributes:
        demo: the ``prosv demo`` run (``results.json`` + ``rows.jsonl``).
        attention: the ``prosv analyse`` folder (``patching.json`` + ``.npz``).
        axbench: the ``prosv axbench-eval`` run (``scores.json`` + ``rows.jsonl``).
        heatmaps: factor-init x LR sweep folders -> what they train on, primary first.
        positions: position sweep folders -> what they train on, primary first.
        commands: folder -> the command line that makes it, shown where a result is missing
            (a folder without one gets ``the command that writes <folder>``).
    """

    demo: str
    attention: str
    axbench: str
    heatmaps: Mapping[str, str]
    positions: Mapping[str, str]
    commands: Mapping[str, str]

    def command(self, folder: str) -> str:
        """How to produce ``folder``'s results."""
        return self.commands.get(folder, f"the command that writes {folder}")


@dataclass(frozen=True)
class Claim:
    """One claim of the paper checked against saved results.

    Attributes:
        title: the claim in a few words.
        paper: what the paper reports.
        verdict: a key of :data:`VERDICTS`.
        evidence: markdown lines with the numbers measured here.
        source: the saved files the numbers come from.
    """

    title: str
    paper: str
    verdict: str
    evidence: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; one of {list(VERDICTS)}")


def paired_difference(
    rows: Sequence[dict], a: str, b: str, *, suite: str = "steering", field: str = "overall"
) -> Estimate:
    """Mean of ``a - b`` over the test-split answers both methods gave to the same instruction
    (matched by concept and ``instruction_id``), with a bootstrap CI over those instructions."""

    def by_task(method: str) -> dict[tuple, float]:
        return {
            (r["concept"], r["instruction_id"]): float(r[field])
            for r in rows
            if r["suite"] == suite and r["split"] == "test" and r["method"] == method
        }

    xa, xb = by_task(a), by_task(b)
    shared = sorted(set(xa) & set(xb))
    if not shared:
        raise ClaimsError(f"no {suite} test instruction was answered by both {a!r} and {b!r}")
    return bootstrap_mean([xa[k] - xb[k] for k in shared])


def verdict(diff: Estimate, sign: int = 1) -> str:
    """The :data:`VERDICTS` key for a difference the paper predicts to have sign ``sign``."""
    mean, low, high = diff.mean * sign, *sorted((diff.low * sign, diff.high * sign))
    if low > 0:
        return "reproduces"
    if high < 0:
        return "contradicted"
    return "same sign, not significant" if mean > 0 else "not reproduced"


SavedEstimate = Estimate | Mapping[str, Any]
"""A saved estimate: an :class:`Estimate`, or its JSON object (``mean``/``low``/``high``)."""


def _bounds(e: SavedEstimate) -> tuple[float, float, float]:
    """``(mean, low, high)`` of an estimate or of its JSON object."""
    if isinstance(e, Estimate):
        return e.mean, e.low, e.high
    return e["mean"], e["low"], e["high"]


def unpaired_verdict(a: SavedEstimate, b: SavedEstimate, sign: int = 1) -> str:
    """Verdict for "``a`` exceeds ``b``" (``sign=-1``: "is below") from two saved estimates
    (:class:`Estimate` or ``mean``/``low``/``high`` dicts): significant only when the CIs do
    not overlap."""
    (a_mean, a_low, a_high), (b_mean, b_low, b_high) = _bounds(a), _bounds(b)
    if sign * (a_mean - b_mean) <= 0:
        apart = a_high < b_low if sign > 0 else a_low > b_high
        return "contradicted" if apart else "not reproduced"
    apart = a_low > b_high if sign > 0 else a_high < b_low
    return "reproduces" if apart else "same sign, not significant"


def _est(e: SavedEstimate, digits: int = 3) -> str:
    mean, low, high = _bounds(e)
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


_REWRITE = "rerun the command that writes it (or move the file away)"


def _read_demo(path: Path) -> DemoResults | None:
    """The demo results in ``path`` (``None`` if it does not exist).

    Raises:
        ResultFileError: the file is unreadable, not JSON, or not a demo result (the field
            named).
    """
    return DemoResults.load(path) if path.exists() else None


def _read_axbench(path: Path) -> AxBenchScores | None:
    """The AxBench scores in ``path`` (``None`` if it does not exist).

    Raises:
        ResultFileError: the file is unreadable, not JSON, or not AxBench scores (the field
            named).
    """
    return AxBenchScores.load(path) if path.exists() else None


def _read_rows(path: Path) -> list[dict]:
    """The judged rows in ``path`` (none if it does not exist), each a JSON object.

    Raises:
        ResultFileError: ``FILE:LINE: ...`` for a line that is not a JSON object, or an
            unreadable or non-UTF-8 file.
    """
    if not path.exists():
        return []
    text = read_text_file(path, what="a judged-rows file", error=ResultFileError)
    if not text.strip():
        return []
    rows = parse_jsonl_text(text, path, fix=_REWRITE, error=ResultFileError)
    for line, row in rows:
        if not isinstance(row, dict):
            raise ResultFileError(f"{path}:{line}: a judged row must be a JSON object: {_REWRITE}")
    return [row for _, row in rows]


def _checked(claims: Callable[..., list[Claim]], where: Path, *args: Any) -> list[Claim]:
    """``claims(*args)``; a saved result lacking a field it reads is named as such.

    Raises:
        ResultFileError: the files under ``where`` lack a field or hold one of another type.
    """
    try:
        return claims(*args)
    except (KeyError, TypeError, IndexError) as e:
        raise ResultFileError(
            f"the results in {where} lack what the report reads ({type(e).__name__}: {e}): "
            f"{_REWRITE}"
        ) from e


@dataclass(frozen=True)
class _Source:
    """One result folder as the report names it (``shown``) and the command that makes it."""

    shown: str
    command: str


def _missing(title: str, paper: str, where: _Source) -> Claim:
    return Claim(title, paper, "no result", (f"run `{where.command}`",), f"{where.shown}/")


# -- claims from the demo run ------------------------------------------------------------------


def demo_claims(results: DemoResults | None, rows: Sequence[dict], where: _Source) -> list[Claim]:
    """Steering (PrOSV vs FSSV), no factor search, utility and the robustness trade-off."""
    titles = {
        "steer": (
            "PrOSV steers better than FSSV",
            "Jointly trained PrOSV beats jointly trained FSSV on the AxBench overall score "
            "(e.g. 0.731 vs 0.490 on Gemma-2-2B L10, Concept10 position search).",
        ),
        "factor": (
            "No post-hoc factor search is needed",
            "The jointly learned factor is used as is and the vector beats baselines whose "
            "factor is searched per vector (DiffMean, classic SV) on AxBench.",
        ),
        "utility": (
            "PrOSV keeps general utility; FSSV does not",
            "Under steering, tinyMMLU/tinyGSM8K accuracy stays near the unsteered model "
            "with PrOSV and collapses with FSSV (e.g. tinyGSM8K 50.5 vs 10.7 on Gemma-2-2B).",
        ),
        "tradeoff": (
            "PrOSV has the better utility-robustness trade-off",
            "FSSV buys utility back only by shrinking its factor (80%, 50%), which costs "
            "robustness to concept-suppressing prompts; PrOSV keeps both.",
        ),
    }
    if results is None or not rows:
        return [_missing(t, p, where) for t, p in titles.values()]
    judge = results.judge.split(";")[0]
    src = (
        f"{where.shown}/results.json, rows.jsonl ({results.model} L{results.layer}, "
        f"concept {results.concept!r}, judge {judge})"
    )
    steer = results.by_method("steering")
    prosv, fssv = steer["prosv"], steer["fssv"]
    n_test = prosv.n_answers

    d = paired_difference(rows, "prosv", "fssv")
    evidence: tuple[str, ...] = (
        f"overall score, {n_test} held-out answers each: PrOSV {_est(prosv.overall)}, "
        f"FSSV {_est(fssv.overall)}, unsteered {_est(steer['unsteered'].overall)}",
        f"paired difference PrOSV - FSSV: {d}",
        f"concept rating (0-2): PrOSV {_est(prosv.concept)}, FSSV {_est(fssv.concept)}",
        f"instruct rating (0-2): PrOSV {_est(prosv.instruct)}, FSSV {_est(fssv.instruct)}",
        f"fluency rating (0-2): PrOSV {_est(prosv.fluency)}, FSSV {_est(fssv.fluency)}",
    )
    claims = [Claim(*titles["steer"], verdict(d), evidence, src)]

    d_dm = paired_difference(rows, "prosv", "diffmean")
    d_pr = paired_difference(rows, "prosv", "prompt")
    alpha0 = results.training["prosv"].log[0].alpha
    alpha_end = results.alphas["prosv"]
    assert alpha_end is not None, "a trained vector's factor is a number (None: the prompt)"
    evidence = (
        f"PrOSV at its learned factor (alpha {alpha0:.1f} after step 1, {alpha_end:.1f} at the "
        f"end; no search): {_est(prosv.overall)}; DiffMean with its factor searched on the "
        f"selection half (chose {results.diffmean_factor:g} x residual norm): "
        f"{_est(steer['diffmean'].overall)}",
        f"paired difference PrOSV - DiffMean: {d_dm}; PrOSV - prompt baseline: {d_pr}",
    )
    claims.append(Claim(*titles["factor"], verdict(d_dm), evidence, src))

    util = {m: u.accuracy for m, u in results.utility.items()}
    kl = {m: u.kl for m, u in results.utility.items() if u.kl is not None}
    v_acc = unpaired_verdict(util["prosv"], util["fssv"])
    v_kl = unpaired_verdict(kl["prosv"], kl["fssv"], -1)
    n_items = util["prosv"].n
    evidence = (
        f"accuracy on {n_items} utility items: unsteered {_est(util['unsteered'])}, PrOSV "
        f"{_est(util['prosv'])}, FSSV {_est(util['fssv'])} (PrOSV > FSSV: {v_acc})",
        f"next-token KL from the unsteered model on neutral prompts: PrOSV {_est(kl['prosv'])}, "
        f"FSSV {_est(kl['fssv'])} (PrOSV < FSSV: {v_kl})",
        "verdict: the weaker of the two",
    )
    claims.append(Claim(*titles["utility"], _weaker(v_acc, v_kl), evidence, src))

    claims.append(_tradeoff_claim(titles["tradeoff"], results, rows, util, src))
    return claims


_ORDER = ("reproduces", "same sign, not significant", "not reproduced", "contradicted")


def _weaker(*verdicts: str) -> str:
    return max(verdicts, key=_ORDER.index)


def _tradeoff_claim(
    title: tuple[str, str],
    results: DemoResults,
    rows: Sequence[dict],
    util: Mapping[str, Estimate],
    src: str,
) -> Claim:
    """Per FSSV scale: PrOSV must be no worse on either axis and better on one (see VERDICTS)."""
    robust = {m: s.overall for m, s in results.by_method("robustness").items()}
    scales = [m for m in robust if m.startswith("fssv")]
    lines = [f"PrOSV: utility {_est(util['prosv'])}, robustness {_est(robust['prosv'])}"]
    per_scale = []
    for m in scales:
        d = paired_difference(rows, "prosv", m, suite="robustness")
        v_rob, v_util = verdict(d), unpaired_verdict(util["prosv"], util[m])
        lines.append(
            f"{m}: utility {_est(util[m])}, robustness {_est(robust[m])}; PrOSV - {m} "
            f"robustness (paired) {d} -> {v_rob}; utility -> {v_util}"
        )
        per_scale.append((v_rob, v_util))
    worse = [any(v == "contradicted" for v in pair) for pair in per_scale]
    better = [any(v in _ORDER[:2] for v in pair) for pair in per_scale]
    if any(w and not b for w, b in zip(worse, better, strict=True)):
        result = "contradicted"  # FSSV at some scale better on both axes, significantly on one
    elif any(worse) or not all(better):
        result = "not reproduced"
    elif all(any(v == "reproduces" for v in pair) for pair in per_scale):
        result = "reproduces"
    else:
        result = "same sign, not significant"
    lines.append(
        "verdict rule: at every FSSV scale PrOSV must be better on at least one axis and "
        "not significantly worse on the other; reproduces when, at every scale, one axis "
        "is significantly better"
    )
    return Claim(*title, result, tuple(lines), src)


def axbench_claims(
    scores: AxBenchScores | None, rows: Sequence[dict], where: _Source
) -> list[Claim]:
    """PrOSV vs FSSV and vs factor-searched DiffMean on AxBench concepts
    (``prosv axbench-eval``)."""
    titles = [
        (
            "PrOSV steers better than FSSV (AxBench Concept10)",
            "Jointly trained PrOSV beats jointly trained FSSV on the AxBench overall score.",
        ),
        (
            "No post-hoc factor search is needed (AxBench Concept10)",
            "The jointly trained vector at its learned factor beats factor-searched baselines.",
        ),
    ]
    if scores is None or not rows:
        return [_missing(t, p, where) for t, p in titles]
    by = scores.by_method()
    n_concepts = len(by["prosv"].factors)
    src = (
        f"{where.shown}/scores.json, rows.jsonl ({n_concepts} concepts of prod_2b_l10_v1, "
        "notebook 04)"
    )
    overall = "; ".join(f"{m} {_est(s.overall)}" for m, s in by.items())
    claims = []
    for (title, paper), other in zip(titles, ("fssv", "diffmean"), strict=True):
        d = paired_difference(rows, "prosv", other)
        evidence = (
            f"overall score (CI over the {n_concepts} concepts' means): {overall}",
            f"paired difference PrOSV - {other} over {d.n} (concept, instruction) answers: {d}",
        )
        claims.append(Claim(title, paper, verdict(d), evidence, src))
    return claims


# -- claims from the sweeps --------------------------------------------------------------------


def _baseline(sweep: SweepResult) -> SweepBaseline:
    """The sweep's unsteered baseline; a sweep saved without one lacks what the report reads.

    Raises:
        KeyError: the baseline unit has not finished (named by :func:`_checked`).
    """
    if sweep.baseline is None:
        raise KeyError("baseline")
    return sweep.baseline


def heatmap_claims(
    sweep: SweepResult | None, rows: Sequence[dict], where: _Source, label: str
) -> list[Claim]:
    """Adam vs SGD, and large factor init and LR (held-out loss and steering score per cell),
    from the sweep saved in ``where`` (``label``: what it trains on, shown when missing)."""
    adam_t = (
        "Adam, not SGD, trains the factor",
        "With SGD the loss barely moves unless the factor init is very large (β=32); Adam "
        "with a large factor init reaches far lower loss (§4.4 table, Gemma-2-2B).",
    )
    init_t = (
        "A large factor init and factor LR are essential",
        "Scaling theory: alpha0 = β·sqrt(d) with β ~ 2-8 and lr_alpha ~ 1-20; small inits or "
        "LRs leave the loss near the unsteered one within the training budget.",
    )
    if sweep is None:
        label = f" ({label})"
        return [
            _missing(adam_t[0] + label, adam_t[1], where),
            _missing(init_t[0] + label, init_t[1], where),
        ]
    label = f" ({sweep.concept})"
    adam_t, init_t = (adam_t[0] + label, adam_t[1]), (init_t[0] + label, init_t[1])
    cfg, base = sweep.config, _baseline(sweep).heldout_loss
    src = (
        f"{where.shown}/sweep.json, rows.jsonl ({sweep.model} L{sweep.layer}, concept "
        f"{sweep.concept!r}, {cfg['n_train']} training examples, {cfg['epochs']} epochs)"
    )
    # keyed (optimizer, (beta, lr_alpha)), a grid point g = (beta, lr_alpha) kept whole
    loss = {
        (c.optimizer, (c.beta, c.lr_alpha)): (
            math.inf if c.diverged or c.heldout_loss is None else c.heldout_loss
        )
        for c in sweep.cells
    }
    key = {(c.optimizer, (c.beta, c.lr_alpha)): c.key for c in sweep.cells}
    grid = [(float(b), float(lr)) for b in cfg["betas"] for lr in cfg["lr_alphas"]]
    claims = []
    if {"adam", "sgd"} <= set(cfg["optimizers"]):
        both = [g for g in grid if ("adam", g) in loss and ("sgd", g) in loss]
        wins = sum(loss["adam", g] < loss["sgd", g] for g in both)

        def lowest(o: str) -> tuple[float, float]:  # the first grid point with o's lowest loss
            return min(both, key=lambda g: loss[o, g])

        best_of = {o: lowest(o) for o in ("adam", "sgd")}
        d = paired_difference(rows, key["adam", best_of["adam"]], key["sgd", best_of["sgd"]])
        l_adam, l_sgd = loss["adam", best_of["adam"]], loss["sgd", best_of["sgd"]]
        if l_adam < l_sgd:
            v = "reproduces" if wins >= 0.75 * len(both) else "same sign, not significant"
        else:
            v = "not reproduced"
        n_diverged = sum(c.diverged is not None for c in sweep.cells)
        evidence = (
            f"held-out loss (unsteered {base:.3f}): Adam lower than SGD in {wins} of "
            f"{len(both)} (β, lr_alpha) cells; best Adam {l_adam:.3f} at "
            f"{key['adam', best_of['adam']]}, best SGD {l_sgd:.3f} at "
            f"{key['sgd', best_of['sgd']]}",
            f"steering score, best Adam cell - best SGD cell (paired): {d}",
            f"diverged cells: {n_diverged}",
            "verdict rule (a held-out loss has no CI here): reproduces when Adam's best loss is "
            "lower than SGD's and Adam is lower in at least 3/4 of the cells; same sign when "
            "only its best is lower",
        )
        claims.append(Claim(*adam_t, v, evidence, src))
    adam = [g for g in grid if ("adam", g) in loss]
    if adam:
        best = min(adam, key=lambda g: loss["adam", g])
        small = min(adam)  # the smallest beta, then the smallest lr_alpha
        gain = {g: (base - loss["adam", g]) / (base - loss["adam", best]) for g in adam}
        d = paired_difference(rows, key["adam", best], key["adam", small])
        lines = [
            f"held-out loss with Adam (unsteered {base:.3f}); rows β, columns lr_alpha:",
            "| β \\ lr_alpha | " + " | ".join(f"{x:g}" for x in cfg["lr_alphas"]) + " |",
            "|---|" + "---|" * len(cfg["lr_alphas"]),
        ]
        for b in cfg["betas"]:
            cells = [loss.get(("adam", (float(b), float(x))), math.nan) for x in cfg["lr_alphas"]]
            lines.append(f"| {b:g} | " + " | ".join(f"{v:.3f}" for v in cells) + " |")
        lines += [
            f"best cell β={best[0]:g}, lr_alpha={best[1]:g}; the smallest (β={small[0]:g}, "
            f"lr_alpha={small[1]:g}) gets {gain[small]:.0%} of the best cell's loss reduction",
            *([f"steering score, best - smallest cell (paired): {d}"] if best != small else []),
            "verdict rule (a held-out loss has no CI here): reproduces when the lowest loss has "
            "both β and lr_alpha above the grid's smallest and the smallest cell gets under half "
            "its loss reduction; same sign when the lowest loss has a β above the smallest; "
            "not reproduced when the smallest β has the lowest loss",
        ]
        if best[0] == small[0]:
            v = "not reproduced"
        elif best[0] > small[0] and best[1] > small[1] and gain[small] < 0.5:
            v = "reproduces"
        else:
            v = "same sign, not significant"
        claims.append(Claim(*init_t, v, tuple(lines), src))
    return claims


def position_claims(
    sweep: SweepResult | None, rows: Sequence[dict], where: _Source, label: str
) -> list[Claim]:
    """A few boundary prompt tokens (``f2+l2``) vs every prompt token and vs every token, from
    the sweep saved in ``where`` (``label``: what it trains on, shown when missing)."""
    title = (
        "A few boundary prompt tokens beat all prompt tokens",
        "Position search (Concept10): f2+l2 0.731 vs all_prompt 0.504 and all (FSSV) 0.490 "
        "on Gemma-2-2B L10; 0.800 vs 0.621 and 0.749 on Gemma-2-9B L20.",
    )
    if sweep is None:
        return [_missing(f"{title[0]} ({label})", title[1], where)]
    title = (f"{title[0]} ({sweep.concept})", title[1])
    src = (
        f"{where.shown}/sweep.json, rows.jsonl ({sweep.model} L{sweep.layer}, "
        "PrOSV preset per spec)"
    )
    cells = {c.key: c for c in sweep.cells if not c.diverged}
    missing = sorted({"f2+l2", "prompt", "all"} - set(cells))
    if missing:  # an unfinished (or diverged) sweep
        return [
            Claim(
                *title,
                "no result",
                (f"cells {missing} are missing or diverged; rerun `{where.command}` to finish",),
                src,
            )
        ]
    d_prompt = paired_difference(rows, "f2+l2", "prompt")
    d_all = paired_difference(rows, "f2+l2", "all")
    ranked = sorted(cells.values(), key=lambda c: -c.score().mean)
    return [
        Claim(
            *title,
            verdict(d_prompt),
            (
                "overall score per spec, best first: "
                + "; ".join(f"{c.key} {_est(c.score(), 2)}" for c in ranked),
                f"paired f2+l2 - prompt: {d_prompt}; f2+l2 - all: {d_all}",
            ),
            src,
        )
    ]


# -- beyond the paper: the route ---------------------------------------------------------------


def mechanism_lines(folder: Path, command: str) -> list[str]:
    """How much of the PrOSV's effect on answer tokens its keys and values carry (path patching);
    ``command`` makes the result when it is missing."""
    if not (folder / "patching.json").exists():
        return [f"no saved path patching: {command}"]
    pp = PathPatchingResult.load(folder / "patching")
    share = pp.fraction_present("kl")
    lines = [  # the patches over several layers and all key/value heads
        f"{mode}/{comp} at every layer above L{pp.layer}: {x:.1%} of the effect (KL) present"
        for mode, comp, layers, heads, x in zip(
            pp.modes, pp.components, pp.patch_layers, pp.patch_heads, share, strict=True
        )
        if len(layers) > 1 and heads is None
    ]
    for heads, what in ((False, "single layers"), (True, "single key/value heads")):
        top = pp.ranking("restore", "kv", heads=heads)[:3]
        if top:
            lines.append(
                f"{what} whose restore removes the most of the effect: "
                + ", ".join(f"{lab.split('/', 2)[2]} ({x:.1%})" for lab, x in top)
            )
    return lines


# -- the report --------------------------------------------------------------------------------


def _sweep(folder: Path) -> tuple[SweepResult | None, list[dict]]:
    """The sweep saved in ``folder`` (``None`` if it has none) and its judged rows.

    Raises:
        ResultFileError: ``sweep.json`` is unreadable, not JSON, or not a sweep result (the
            field named), or ``rows.jsonl`` is broken.
    """
    path = folder / "sweep.json"
    return SweepResult.load(path) if path.exists() else None, _read_rows(folder / "rows.jsonl")


def _source(root: Path, folders: ResultFolders, folder: str) -> _Source:
    """``folder`` as the report names it: under the results folder's own name (``results/x``)."""
    return _Source(f"{_name(root)}/{folder}", folders.command(folder))


def _name(root: Path) -> str:
    return root.resolve().name


def collect_claims(results_dir: str | Path, folders: ResultFolders) -> list[Claim]:
    """Every claim, from the saved results under ``results_dir`` (missing ones: ``no result``),
    in the sub-folders ``folders`` names.

    Raises:
        ClaimsError: ``results_dir`` is not a folder.
        ResultFileError: a saved result is corrupt or lacks a field the report reads.
    """
    root = Path(results_dir)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise ClaimsError(
            f"results folder {root} {what}: pass the folder of saved results with --results"
        )
    demo, axbench = root / folders.demo, root / folders.axbench
    return [
        *_checked(
            demo_claims,
            demo,
            _read_demo(demo / "results.json"),
            _read_rows(demo / "rows.jsonl"),
            _source(root, folders, folders.demo),
        ),
        *_checked(
            axbench_claims,
            axbench,
            _read_axbench(axbench / "scores.json"),
            _read_rows(axbench / "rows.jsonl"),
            _source(root, folders, folders.axbench),
        ),
        *(
            c
            for f, label in folders.positions.items()
            for c in _checked(
                position_claims, root / f, *_sweep(root / f), _source(root, folders, f), label
            )
        ),
        *(
            c
            for f, label in folders.heatmaps.items()
            for c in _checked(
                heatmap_claims, root / f, *_sweep(root / f), _source(root, folders, f), label
            )
        ),
    ]


def summary_table(claims: Sequence[Claim]) -> list[str]:
    """The report's summary: one markdown table row per claim (number, title, verdict)."""
    return [
        "| # | claim | verdict |",
        "|---|---|---|",
        *(f"| {i} | {c.title} | {c.verdict} |" for i, c in enumerate(claims, 1)),
    ]


def render_report(
    claims: Sequence[Claim],
    mechanism: Sequence[str] = (),
    *,
    results: str = "results",
    attention: str = "results/attention_ocean",
) -> str:
    """The markdown report: a summary table, one section per claim, the verdict rules.

    ``results`` and ``attention`` name the results folder and the path-patching folder in the
    text."""
    out = [
        "# Paper claims vs the embedded model",
        "",
        f"Generated by `prosv report` from the saved results under `{results}/` (no model run); "
        "regenerate after rerunning an experiment. The paper is arXiv 2605.05983 (Gemma-2 and "
        "Qwen models, 100 AxBench concepts, LLM judge); here everything runs on SmolLM2-135M-"
        "Instruct on 2 CPU cores with the offline judge, on few concepts (a built-in concept "
        "written by SmolLM2 itself; one AxBench Concept10 concept for the sweeps and the first "
        "few for notebook 04), so the CIs are wide and a claim that does not reproduce here may "
        "still hold at the paper's scale.",
        "",
        *summary_table(claims),
        "",
    ]
    for i, c in enumerate(claims, 1):
        out += [
            f"## {i}. {c.title}",
            "",
            f"**Paper.** {c.paper}",
            "",
            f"**Here** ({c.source}):",
            "",
        ]
        prev_table = False
        for line in c.evidence:  # a table gets blank lines around it, other lines are bullets
            table = line.startswith("|")
            if table != prev_table and out[-1] != "":
                out.append("")
            out.append(line if table else f"- {line}")
            prev_table = table
        out += ["", f"**Verdict: {c.verdict}.**", ""]
    if mechanism:
        out += [
            "## Beyond the paper: the route of a prompt-only edit",
            "",
            f"Path patching of the PrOSV (`{attention}/`): the effect on answer tokens "
            "when only the steered positions' keys and/or values at layers above L are restored to "
            "their unsteered values (restore) or transplanted into an unsteered run (inject).",
            "",
        ]
        out += [f"- {line}" for line in mechanism] + [""]
    out += [
        "## Verdict rules",
        "",
        *(f"- **{k}**: {v}" for k, v in VERDICTS.items()),
        "",
        "Paired differences: bootstrap over instructions (1000 resamples, seed 0). Unpaired "
        "comparisons (utility accuracy, KL): different only when the 95% CIs do not overlap.",
        "",
    ]
    return "\n".join(out)


def build_report(
    results_dir: str | Path, folders: ResultFolders, claims: Sequence[Claim] | None = None
) -> str:
    """:func:`render_report` of :func:`collect_claims` (or the given ``claims``, already
    collected from ``results_dir``) and :func:`mechanism_lines`."""
    root = Path(results_dir)
    claims = collect_claims(root, folders) if claims is None else claims
    mechanism = mechanism_lines(root / folders.attention, folders.command(folders.attention))
    attention = _source(root, folders, folders.attention).shown
    return render_report(claims, mechanism, results=_name(root), attention=attention)
