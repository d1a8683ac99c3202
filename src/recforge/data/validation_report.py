"""Human-readable renderings of a validation report: the Markdown page and one-line failures.

Pure formatting of the JSON-serialisable report that `recforge.data.validation` builds (never
imports great-expectations or pandas). Conventions:
- a check's result is `ok` when it passed, `FAIL` for a failed `error` check (a hard failure,
  which stops the run) and `warn` for a failed `warning` check;
- an observed float shows 4 significant digits; any other observed value is cut to 120 characters;
- an offending row reads `row <position> (column='value', ...)`, position in the checked table;
- table cells escape `|` and join lines; timestamps are UTC, `YYYY-MM-DD HH:MM:SS`;
- shares print as percentages with one decimal.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def report_to_markdown(report: dict) -> str:
    """A readable page of the report: a summary, one table of checks per dataset, the statistics."""
    summary = report["summary"]
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines = [
        "# Validation report",
        "",
        f"**{verdict}**: {summary['checks']} checks, {summary['failed_errors']} failed error(s), "
        f"{summary['failed_warnings']} failed warning(s).",
        "",
    ]
    if not report["passed"]:
        lines += ["Hard failures stop the run; fix them and run `kedro run --pipelines validation`.", ""]
    for table, section in report["tables"].items():
        lines += [
            f"## {table} ({section['rows']} rows)",
            "",
            "| result | check | column | expectation | severity | expected | observed | offending rows |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for e in section["checks"]:
            result = "ok" if e["success"] else ("FAIL" if e["severity"] == "error" else "warn")
            cells = [
                result,
                e["check"],
                e["column"],
                e["expectation"],
                e["severity"],
                e["expected"],
                _short(e["observed_value"]),
                "; ".join(_describe_row(r) for r in e["offending_rows"]),
            ]
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        lines.append("")
    lines += ["## Recommender statistics", ""]
    stats = report["recommender"]
    if "skipped" in stats:
        lines += [f"Skipped: {stats['skipped']}.", ""]
        return "\n".join(lines)
    span = stats["time_span"]
    lines += [
        f"- interactions: {stats['interactions']}",
        f"- time span: {iso_utc(span['first'])} .. {iso_utc(span['last'])} "
        f"(cold-start cutoff {iso_utc(span['cold_start_cutoff'])})",
        "",
        "| entity | count | min interactions | below min (share) | cold start (share) "
        "| without interactions |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("users", "items"):
        s = stats[kind]
        lines.append(
            f"| {kind} | {s['count']} | {s['min_interactions']} "
            f"| {s['below_min']} ({s['share_below_min']:.1%}) "
            f"| {s['cold_start']} ({s['cold_start_share']:.1%}) "
            f"| {s.get('without_interactions', '-')} |"
        )
    lines.append("")
    sessions = stats["sessions"]
    if sessions is None:
        lines.append("No session ids.")
    else:
        lines += [
            "| sessions | min | median | p95 | max | length-1 share |",
            "|---|---|---|---|---|---|",
            f"| {sessions['count']} | {sessions['min']} | {sessions['median']} | {sessions['p95']} "
            f"| {sessions['max']} | {sessions['share_length_one']:.1%} |",
        ]
    lines.append("")
    return "\n".join(lines)


def _describe_row(row: dict) -> str:
    values = ", ".join(f"{k}={v!r}" for k, v in row.items() if k != "row")
    return f"row {row['row']} ({values})" if values else f"row {row['row']}"


def describe_failure(failure: dict) -> str:
    """One line for a failed check (with its `table`): where, what was expected and seen, which rows."""
    rows = failure["offending_rows"]
    n = failure["unexpected_count"]
    text = (
        f"table {failure['table']!r}, column {failure['column']!r}: {failure['expectation']} "
        f"[check {failure['check']}] expected {failure['expected']}, "
        f"observed {_short(failure['observed_value'])}"
    )
    if rows:
        more = f" of {n}" if n is not None and n > len(rows) else ""
        text += f"; offending rows{more}: " + "; ".join(_describe_row(r) for r in rows)
    return text


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def iso_utc(ts: float) -> str:
    """Unix seconds as a UTC `YYYY-MM-DD HH:MM:SS`."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
