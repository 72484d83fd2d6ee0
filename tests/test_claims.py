"""The reproduction report: paired differences, verdict rules, and the committed report is the
one the committed results generate."""

from pathlib import Path

import pytest

from prosv_lens.cli import main, report_folders
from prosv_lens.evaluation.stats import Estimate
from prosv_lens.experiments.claims import (
    VERDICTS,
    Claim,
    ClaimsError,
    build_report,
    collect_claims,
    paired_difference,
    unpaired_verdict,
    verdict,
)

ROOT = Path(__file__).resolve().parents[1]


def _row(method, iid, overall, *, concept="c", split="test", suite="steering"):
    return {"method": method, "instruction_id": iid, "overall": overall, "concept": concept,
            "split": split, "suite": suite}  # fmt: skip


def test_paired_difference_matches_rows_by_concept_and_instruction():
    rows = [
        _row("a", 0, 1.0), _row("a", 1, 2.0), _row("a", 0, 0.5, concept="d"),
        _row("b", 1, 1.5), _row("b", 0, 0.0), _row("b", 0, 1.5, concept="d"),
        _row("b", 2, 9.0),  # no partner: ignored
        _row("a", 2, 9.0, split="select"), _row("a", 3, 9.0, suite="robustness"),
        _row("b", 3, 0.0, suite="robustness"),
    ]  # fmt: skip
    d = paired_difference(rows, "a", "b")
    assert d.n == 3 and d.mean == pytest.approx(((1.0 - 0.0) + (2.0 - 1.5) + (0.5 - 1.5)) / 3)
    assert d.low <= d.mean <= d.high
    assert paired_difference(rows, "a", "b", suite="robustness").mean == 9.0
    with pytest.raises(ClaimsError, match="answered by both 'a' and 'zzz'"):
        paired_difference(rows, "a", "zzz")


@pytest.mark.parametrize(
    ("est", "sign", "expected"),
    [
        ((0.3, 0.1, 0.5), 1, "reproduces"),
        ((0.3, 0.1, 0.5), -1, "contradicted"),
        ((0.1, -0.1, 0.3), 1, "same sign, not significant"),
        ((0.1, -0.1, 0.3), -1, "not reproduced"),
        ((0.0, -0.1, 0.1), 1, "not reproduced"),
        ((-0.3, -0.5, -0.1), -1, "reproduces"),
    ],
)
def test_verdict_rules(est, sign, expected):
    assert verdict(Estimate(*est, n=10), sign) == expected


def test_unpaired_verdict_needs_disjoint_cis_for_significance():
    hi, lo = {"mean": 0.6, "low": 0.5, "high": 0.7}, {"mean": 0.3, "low": 0.2, "high": 0.4}
    near = {"mean": 0.55, "low": 0.45, "high": 0.65}
    assert unpaired_verdict(hi, lo) == "reproduces"
    assert unpaired_verdict(lo, hi) == "contradicted"
    assert unpaired_verdict(hi, near) == "same sign, not significant"
    assert unpaired_verdict(near, hi) == "not reproduced"
    assert unpaired_verdict(lo, hi, -1) == "reproduces"  # "lo is below hi"


def test_claim_rejects_an_unknown_verdict():
    with pytest.raises(ValueError, match="unknown verdict 'maybe'"):
        Claim("t", "p", "maybe", (), "s")


def test_missing_results_give_no_result_and_the_command(tmp_path):
    claims = collect_claims(tmp_path, report_folders())
    assert len(claims) == 11 and {c.verdict for c in claims} == {"no result"}
    text = build_report(tmp_path, report_folders())
    for command in ("prosv demo", "prosv sweep configs/heatmap_medium.json",
                    "prosv sweep configs/heatmap_axbench.json",
                    "prosv sweep configs/positions_axbench.json",
                    "prosv axbench-eval --axbench"):  # fmt: skip
        assert command in text
    assert all(f"**{k}**" in text for k in VERDICTS)


def test_committed_report_is_generated_from_the_committed_results():
    committed = (ROOT / "reports/paper_claims.md").read_text()
    assert build_report(ROOT / "results", report_folders()) == committed, (
        "reports/paper_claims.md is out of date: run `prosv report`"
    )


def test_report_command_writes_the_file(tmp_path, capsys):
    out = tmp_path / "r" / "claims.md"
    assert main(["report", "--results", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_text() == build_report(tmp_path, report_folders())
    printed = capsys.readouterr().out
    assert printed.startswith("| # | claim | verdict |") and f"wrote {out}" in printed
