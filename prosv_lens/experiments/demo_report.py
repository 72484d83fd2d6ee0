"""The demo's report: markdown tables with 95% CIs, sample answers, figures, from saved results.

The report states how many judge replies could not be parsed (rated 0) per suite, so scores from a
judge that answered little usable are never shown as if they were normal.
"""

from collections.abc import Sequence
from pathlib import Path

from prosv_lens.evaluation.stats import Estimate
from prosv_lens.evaluation.steering_eval import judge_parse_failures
from prosv_lens.experiments.demo_results import DemoResults
from prosv_lens.figures.regenerate import evaluation_figures

SUMMARY_METHODS = ("unsteered", "prompt", "diffmean", "prosv", "fssv")


def _est(e: Estimate | None) -> str:
    return "-" if e is None else f"{e.mean:.3f} [{e.low:.3f}, {e.high:.3f}]"


def _cell(text: str, limit: int = 220) -> str:
    text = text.strip().replace("|", "\\|").replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[:limit] + " …"


def write_figures(folder: Path, results: DemoResults) -> list[Path]:
    """The run's figures (steering scores, utility vs robustness, training curves); PNG paths."""
    return [p for p in evaluation_figures(results.to_dict(), folder) if p.suffix == ".png"]


def parse_failure_lines(rows: Sequence[dict]) -> list[str]:
    """One markdown bullet per suite in ``rows``: its unparseable judge replies, rate and counts."""
    suites = list(dict.fromkeys(r["suite"] for r in rows))
    return [f"- {s}: {judge_parse_failures(rows, s).describe()}." for s in suites]


def render_report(results: DemoResults, rows: Sequence[dict]) -> str:
    """Markdown: settings, the steering / utility / robustness tables, the judge's unparseable
    replies, samples, timings."""
    steering, robust = results.by_method("steering"), results.by_method("robustness")
    util = results.utility
    lines = [
        f"# prosv demo — {results.concept}",
        "",
        f"Model `{results.model}`, layer {results.layer}, {results.n_train} training "
        f"examples, judge `{results.judge}`. Scores are 0-2 (harmonic mean of concept, "
        "instruction relevance and fluency, 0 if any is 0), means with 95% bootstrap CIs over "
        "held-out answers. DiffMean's factor was selected on the first half of the held-out "
        f"instructions (x{results.diffmean_factor:g} the median residual norm); the jointly "
        "trained vectors use their learned factor as is.",
        "",
        "| method | alpha | concept | instruct | fluency | **overall** | KL damage (nats) | "
        "utility accuracy | robustness (overall) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in SUMMARY_METHODS:
        s, u = steering[m], util.get(m)
        alpha = results.alphas.get(m)
        no_kl = "0" if m == "unsteered" else "-"  # the unsteered model is the KL reference
        kl = _est(u.kl) if u is not None and u.kl is not None else no_kl
        cells = [
            m,
            "-" if alpha is None else f"{alpha:.1f}",
            *(_est(e) for e in (s.concept, s.instruct, s.fluency)),
            f"**{_est(s.overall)}**",
            kl,
            _est(None if u is None else u.accuracy),
            _est(robust[m].overall) if m in robust else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "FSSV with its learned factor scaled down (utility / robustness trade-off):", ""]
    lines += [
        "| method | alpha | KL damage | utility accuracy | robustness (overall) |",
        "|---|---|---|---|---|",
    ]
    order = {s.method: i for i, s in enumerate(results.robustness)}  # util's keys may be sorted
    scaled = sorted((k for k in util if k.startswith("fssv ")), key=lambda k: order.get(k, 0))
    for m in ("prosv", "fssv", *scaled):
        u = util[m]
        alpha = results.alphas[m]
        lines.append(
            f"| {m} | {'-' if alpha is None else f'{alpha:.1f}'} | {_est(u.kl)} | "
            f"{_est(u.accuracy)} | {_est(robust[m].overall) if m in robust else '-'} |"
        )
    lines += ["", "Judge replies, per suite:", ""]
    lines += parse_failure_lines(rows)
    lines += ["", "## Sample answers (held-out instructions, test half)", ""]
    lines += ["| method | instruction | answer | rating c/i/f |", "|---|---|---|---|"]
    for m in SUMMARY_METHODS:
        mine = [
            r
            for r in rows
            if r["suite"] == "steering" and r["method"] == m and r["split"] == "test"
        ]
        for r in mine[:2]:
            rating = f"{r['score_concept']:g}/{r['score_instruct']:g}/{r['score_fluency']:g}"
            lines.append(
                f"| {m} | {_cell(r['instruction'], 80)} | {_cell(r['response'])} | {rating} |"
            )
    lines += ["", "## Figures", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in results.figures]
    secs = results.stage_seconds()
    lines += ["", "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in secs), ""]
    return "\n".join(lines)
