"""The report page: one HTML file that needs nothing else (no script, no font, no image, no
request: a Content-Security-Policy forbids every load) and prints cleanly.

Every piece of text from the handoff (comments, model names, keys, file names, options) goes
through `_e`, so user text is always data, never markup.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from html import escape
from pathlib import Path
from typing import Any

from owui_replay.option_names import command_option, option
from owui_replay.report_data import DOWN, NO_DAY, OTHER, UP, Leaving
from owui_replay.report_diff import Comparison
from owui_replay.report_pii import KINDS, find
from owui_replay.report_stays import REASONS, Dropped, Rejects
from owui_replay.report_svg import columns, hbars
from owui_replay.verifying import Report

MANIFEST_META = "owui-replay-manifest-sha256"
CHART_ROWS = 25  # bars drawn per chart; the tables under them list every row (up to --rows)

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111;background:#fff;
margin:0 auto;max-width:1100px;padding:16px 24px;line-height:1.4;font-size:14px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;border-bottom:2px solid #111;margin-top:32px}
h3{font-size:15px;margin:20px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;width:100%}
th,td{border:1px solid #999;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#eee}.glance th,.signoff th{width:28%}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr{break-inside:avoid}thead{display:table-header-group}
.hash,.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;
word-break:break-all}
.text{white-space:pre-wrap;word-break:break-word}
.ok{font-weight:bold}.fail{font-weight:bold;background:#111;color:#fff;padding:0 4px}
.verdict{border:3px solid #111;padding:8px 12px;margin:12px 0;font-size:16px}
.verdict.bad{border-style:double;border-width:6px}
mark{background:#ffe066;color:#000;border-bottom:2px solid #000;font-weight:bold}
.note{color:#444;font-size:13px}
nav ol{columns:3;margin:4px 0}
svg.chart{max-width:100%;height:auto;display:block;margin:6px 0}
.signoff td{height:34px}
footer{margin-top:32px;border-top:1px solid #999;font-size:12px;color:#444}
@media print{body{max-width:none;padding:0;font-size:11px}nav{display:none}
h2{break-after:avoid}h3{break-after:avoid}svg.chart{break-inside:avoid}}
@page{size:A4;margin:14mm 12mm 18mm}
"""


# Invisible and direction-changing characters: a right-to-left override can make a comment
# read backwards to the reviewer, a zero-width space hide a word. Shown as their code point.
_HIDDEN = re.compile("[\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def _e(text: object) -> str:
    """TEXT as HTML text or attribute value: escaped, hidden characters made visible."""
    shown = _HIDDEN.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", str(text))
    return escape(shown, quote=True)


def _n(value: int) -> str:
    return f"{value:,}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def day_text(day: int) -> str:
    return "no date" if day == NO_DAY else (date(1970, 1, 1) + timedelta(days=day)).isoformat()


def highlighted(text: str) -> str:
    """TEXT escaped, with each likely personal datum in a <mark> naming its kind."""
    out, at = [], 0
    for start, end, kind in find(text):
        out.append(_e(text[at:start]))
        out.append(f'<mark title="{_e(kind)}">{_e(text[start:end])}</mark>')
        at = end
    out.append(_e(text[at:]))
    return "".join(out)


def table(
    head: Sequence[str],
    rows: Iterable[Sequence[str]],
    numeric: Sequence[int] = (),
    *,
    cls: str = "",
) -> str:
    """A table of already-escaped cells; columns in NUMERIC are right-aligned."""
    ths = "".join(
        f"<th{' class=n' if i in numeric else ''}>{_e(h)}</th>" for i, h in enumerate(head)
    )
    body = []
    for row in rows:
        tds = "".join(
            f"<td{' class=n' if i in numeric else ''}>{cell}</td>" for i, cell in enumerate(row)
        )
        body.append(f"<tr>{tds}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(head)}">none</td></tr>')
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{ths}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def pairs(rows: Iterable[tuple[str, str]], *, cls: str = "") -> str:
    """A two-column table of (escaped label, escaped value), without a header."""
    klass = f' class="{cls}"' if cls else ""
    body = "".join(f"<tr><th>{label}</th><td>{value}</td></tr>" for label, value in rows)
    return f"<table{klass}><tbody>{body}</tbody></table>"


def shown(kept: int, total: int, what: str) -> str:
    if total <= kept:
        return f'<p class="note">All {_n(total)} {what} are listed.</p>'
    return (
        f'<p class="note"><b>The first {_n(kept)} of {_n(total)} {what}</b> are listed '
        f"({option('rows')} sets how many); every one was counted and searched.</p>"
    )


@dataclass
class FileRow:
    role: str
    path: Path
    size: int | None
    sha256: str | None
    note: str = ""


@dataclass
class Page:
    """Everything the page shows, gathered by report.make_report."""

    feedback: Path
    generated: str
    command: str
    tool_version: str
    manifest: dict[str, Any] | None
    manifest_sha256: str | None
    files: list[FileRow]
    verification: Report
    export_given: bool
    signers_given: bool
    leaving: Leaving
    comparison: Comparison | None
    rejects: Rejects | None
    dropped: Dropped | None
    rows: int


def render(page: Page) -> str:
    style = STYLE.strip()
    digest = base64.b64encode(hashlib.sha256(style.encode("utf-8")).digest()).decode()
    csp = (
        f"default-src 'none'; style-src 'sha256-{digest}'; img-src 'none'; font-src 'none'; "
        "script-src 'none'; connect-src 'none'; base-uri 'none'; form-action 'none'"
    )
    sections = [
        _head(page),
        _nav(),
        _handoff(page),
        _leaves(page),
        _stays(page),
        _signoff(page),
    ]
    title = f"What leaves: {page.feedback.name}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
        '<meta name="referrer" content="no-referrer"><meta name="color-scheme" content="light">'
        f'<meta name="{MANIFEST_META}" content="{_e(page.manifest_sha256 or "")}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{style}</style></head><body>"
        + "".join(sections)
        + _footer(page)
        + "</body></html>\n"
    )


def _sides_and_span(leaving: Leaving) -> tuple[int, int, str]:
    """Ratings that leave up and down, and the days their metadata spans."""
    up = sum(n for (_m, side), n in leaving.models.items() if side == UP)
    down = sum(n for (_m, side), n in leaving.models.items() if side == DOWN)
    days = [d for d, *_ in leaving.by_day() if d != NO_DAY]
    span = f"{day_text(days[0])} to {day_text(days[-1])}" if days else "no dates"
    return up, down, span


def _head(page: Page) -> str:
    report, leaving = page.verification, page.leaving
    failed = [text for ok, text in report.checks if not ok]
    valid = [s for s in report.signatures if s.principals]
    up, down, span = _sides_and_span(leaving)
    verdict = (
        f"All {len(report.checks)} checks pass."
        if not failed
        else f"{len(failed)} of {len(report.checks)} checks FAIL: do not approve this handoff."
    )
    stays = page.rejects.lines if page.rejects else 0
    glance = [
        (
            "ratings that leave",
            f'<span id="glance-lines">{_n(leaving.lines)}</span> '
            f"({_n(up)} up, {_n(down)} down) for {_n(len({m for m, _s in leaving.models}))} "
            f"model(s), from {_n(len(leaving.raters))} rater(s), {span}",
        ),
        (
            "free-text values that leave",
            f"{_n(leaving.text_values)} in {_n(leaving.text_lines)} lines",
        ),
        (
            "likely personal data",
            f'<span id="glance-pii">{_n(leaving.pii_total())}</span> '
            f"finding(s) in {_n(leaving.pii_any_lines)} line(s)",
        ),
        ("records that stay", f"{_n(stays)} (rejected or filtered by convert)"),
        (
            "approvals",
            f"{len(report.signatures)} present"
            + (
                f", {len(valid)} valid"
                if page.signers_given
                else f", not checked (no {option('allowed_signers')})"
            ),
        ),
        (
            "manifest sha256",
            f'<span class="hash" id="manifest-sha256">'
            f"{_e(page.manifest_sha256 or 'no manifest')}</span>",
        ),
    ]
    unreadable = (
        f'<p class="verdict bad">The lines could not all be read: {_e(leaving.unreadable)}. '
        "The figures below cover only the lines before that point.</p>"
        if leaving.unreadable
        else ""
    )
    return (
        f"<header><h1>What leaves the network: {_e(page.feedback.name)}</h1>"
        f'<p class="note">owui-replay {_e(page.tool_version)} report, made {_e(page.generated)} '
        f"by <span class=mono>{_e(page.command)}</span></p>"
        f'<p class="verdict{"" if not failed else " bad"}" id="verdict">{_e(verdict)}</p>'
        + unreadable
        + pairs([(_e(k), v) for k, v in glance], cls="glance")
        + "</header>"
    )


def _nav() -> str:
    entries = [
        ("handoff", "The handoff"),
        ("checks", "Checks"),
        ("approvals", "Approvals"),
        ("options", "Options"),
        ("leaves", "What leaves"),
        ("values", "By value"),
        ("models", "By model"),
        ("days", "By day"),
        ("raters", "By rater"),
        ("previous", "Against the previous handoff"),
        ("withdrawals", "Withdrawals"),
        ("keys", "Metadata keys"),
        ("pii", "Likely personal data"),
        ("text", "Free text"),
        ("stays", "What stays"),
        ("rejects", "Rejects by reason"),
        ("dropped", "Metadata dropped"),
        ("signoff", "Sign-off"),
    ]
    items = "".join(f'<li><a href="#{a}">{_e(t)}</a></li>' for a, t in entries)
    return f"<nav><ol>{items}</ol></nav>"


def _handoff(page: Page) -> str:
    files = table(
        ["file", "role", "bytes", "sha256"],
        (
            (
                f'<span class="mono">{_e(f.path)}</span>',
                _e(f.role) + (f" ({_e(f.note)})" if f.note else ""),
                _n(f.size) if f.size is not None else "missing",
                f'<span class="hash">{_e(f.sha256 or "-")}</span>',
            )
            for f in page.files
        ),
        (2,),
    )
    manifest = page.manifest or {}
    tool = _part(manifest, "tool")
    made = [
        ("made by (manifest)", f"{tool.get('name', '?')} {tool.get('version', '?')}"),
        ("this report's owui-replay", page.tool_version),
        ("schemas", ", ".join(f"{k}: {v}" for k, v in _part(manifest, "schemas").items())),
        (
            "input (manifest)",
            ", ".join(f"{k}: {v}" for k, v in _part(manifest, "input").items()),
        ),
    ]
    options = _part(manifest, "options")
    option_rows = [
        (f'<span class="mono">{_e(k)}</span>', f'<span class="mono text">{_e(_json(v))}</span>')
        for k, v in sorted(options.items())
    ]
    return (
        '<section><h2 id="handoff">1. The handoff</h2>'
        + files
        + _checks(page)
        + _approvals(page)
        + _accounting(page)
        + '<h3 id="options">Made by, and with which options (from the manifest)</h3>'
        + pairs([(_e(k), _e(v)) for k, v in made])
        + table(["option", "value"], option_rows)
        + "</section>"
    )


def _part(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """A section of the manifest, or {} when it is missing or not an object."""
    part = manifest.get(name)
    return part if isinstance(part, dict) else {}


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _accounting(page: Page) -> str:
    """Every input record, by outcome: what the manifest says next to what the files hold."""
    counts = _part(page.manifest or {}, "counts")
    found: dict[str, int] = {"written": page.leaving.lines}
    if page.rejects is not None:
        for (outcome, _reason), n in page.rejects.by_reason.items():
            found[outcome] = found.get(outcome, 0) + n
    found["records"] = sum(found.values())
    names = ["records", "written", "invalid", "skipped", "filtered", "duplicate", "superseded"]
    rows = []
    for name in names:
        said = counts.get(name)
        rows.append(
            (
                _e(name),
                f'<span id="m-{name}">{_e(_n(said) if isinstance(said, int) else "-")}</span>',
                f'<span id="f-{name}">{_n(found.get(name, 0))}</span>',
                "" if said == found.get(name, 0) else '<span class="fail">differs</span>',
            )
        )
    return "<h3>Every record of the export, by outcome</h3>" + table(
        ["outcome", "manifest says", "counted in the files", ""], rows, (1, 2)
    )


def _checks(page: Page) -> str:
    report = page.verification
    verify_export = command_option("verify", "export")
    rows = [
        ('<span class="ok">ok</span>' if ok else '<span class="fail">FAIL</span>', _e(text))
        for ok, text in report.checks
    ]
    note = (
        f"{verify_export}: the export's sha256 and a byte-identical re-conversion are checked."
        if page.export_given
        else f"Without {option('export')} the re-conversion is not checked: pass the export to "
        "prove the lines are exactly what convert makes of it."
    )
    return (
        '<h3 id="checks">Checks (the same as '
        + (verify_export if page.export_given else "owui-replay verify")
        + ")</h3>"
        + table(["result", "check"], rows)
        + f'<p class="note">{_e(note)}</p>'
    )


def _approvals(page: Page) -> str:
    report = page.verification
    rows = []
    for s in report.signatures:
        if s.principals:
            status = '<span class="ok">valid</span> for ' + _e(", ".join(s.principals))
        elif page.signers_given:
            status = '<span class="fail">not valid</span> ' + _e(s.problem)
        else:
            status = _e(s.problem)
        rows.append(
            (
                f'<span class="mono">{_e(s.path.name)}</span>',
                f'<span class="hash">{_e(s.fingerprint)}</span>',
                status,
            )
        )
    note = (
        "Checked against the allowed_signers file given: only a valid signature counts for replay."
        if page.signers_given
        else f"Signatures were not checked: pass {option('allowed_signers', 'FILE')} to see which "
        "are valid."
    )
    return (
        '<h3 id="approvals">Approvals present</h3>'
        + table(["signature", "key", "status"], rows)
        + f'<p class="note">{_e(note)}</p>'
    )


def _leaves(page: Page) -> str:
    leaving = page.leaving
    return (
        '<section><h2 id="leaves">2. What leaves</h2>'
        f"<p>{_n(leaving.lines)} lines, {_n(leaving.byte_count)} bytes, each one Portkey feedback "
        "payload (trace_id, value, weight, metadata). The chat itself (the snapshot) is never "
        "copied into a payload.</p>"
        + _values(leaving)
        + _models(leaving, page.rows)
        + _days(leaving)
        + _raters(leaving, page.rows)
        + _previous(page.comparison)
        + _withdrawals(leaving)
        + _keys(leaving)
        + _personal(leaving)
        + _free_text(leaving)
        + "</section>"
    )


def _values(leaving: Leaving) -> str:
    rows = sorted(leaving.values.items(), key=lambda kv: -kv[0])
    chart = hbars(
        "values",
        "Ratings by value",
        [(f"value {v:+d} ({leaving.side(v)})", [(leaving.side(v), n)]) for v, n in rows],
    )
    weights = ", ".join(f"weight {w}: {_n(n)} lines" for w, n in sorted(leaving.weights.items()))
    return (
        '<h3 id="values">Ratings by value</h3>'
        + chart
        + table(
            ["value", "means", "lines", "share"],
            (
                (
                    f"{v:+d}",
                    _e(leaving.side(v)),
                    f'<span id="value-{v}">{_n(n)}</span>',
                    _pct(n, leaving.lines),
                )
                for v, n in rows
            ),
            (2, 3),
        )
        + f'<p class="note">{_e(weights or "no weights")}</p>'
    )


def _models(leaving: Leaving, limit: int) -> str:
    rows = leaving.by_model()
    chart = hbars(
        "models",
        "Ratings by model, up and down",
        [
            (m, [(UP, u), (DOWN, d)] + ([(OTHER, o)] if o else []))
            for m, u, d, o in rows[:CHART_ROWS]
        ],
    )
    more = f"; the chart shows the {CHART_ROWS} most rated" if len(rows) > CHART_ROWS else ""
    return (
        '<h3 id="models">By model (metadata model_id)</h3>'
        + chart
        + table(
            ["model", "up", "down", "other", "total", "down share"],
            (
                (_e(m), _n(u), _n(d), _n(o), _n(u + d + o), _pct(d, u + d + o))
                for m, u, d, o in rows[:limit]
            ),
            (1, 2, 3, 4, 5),
        )
        + shown(min(limit, len(rows)), len(rows), "models")
        + (f'<p class="note">{_e(more[2:])}.</p>' if more else "")
    )


def _buckets(days: list[tuple[int, int, int, int]]) -> tuple[str, list[tuple[str, int, int, int]]]:
    """Days, weeks or months, whichever gives at most ~60 columns; gaps are shown as zero."""
    dated = [row for row in days if row[0] != NO_DAY]
    undated = [row for row in days if row[0] == NO_DAY]
    if not dated:
        return "day", [("no date", u, d, o) for _day, u, d, o in undated]
    first, last = dated[0][0], dated[-1][0]
    counts = {row[0]: row[1:] for row in dated}
    labelled = _day_labels(first, last)
    if labelled is None:  # years, decades or centuries: a long span (or a stray time)
        return _by_years(dated, undated)
    unit, keys = labelled
    out: dict[str, list[int]] = {}
    for day, label in keys:
        bucket = out.setdefault(label, [0, 0, 0])
        for i, n in enumerate(counts.get(day, (0, 0, 0))):
            bucket[i] += n
    series = [(label, u, d, o) for label, (u, d, o) in out.items()]
    series += [("no date", u, d, o) for _day, u, d, o in undated]
    return unit, series


def _day_labels(first: int, last: int) -> tuple[str, list[tuple[int, str]]] | None:
    """Each day from FIRST to LAST with its column's label, by day, week or month (whichever
    keeps the chart to ~60 columns); None for a span that needs years."""
    span = last - first + 1
    if span <= 62:
        return "day", [(day, day_text(day)) for day in range(first, last + 1)]
    if span <= 7 * 60:
        start = first - (first + 3) % 7  # 1970-01-01 was a Thursday
        weeks = [(day, day_text(day - (day + 3) % 7)) for day in range(start, last + 1)]
        return "week (from Monday)", weeks
    if (day_year(last) - day_year(first)) * 12 < 72:
        return "month", [(day, day_text(day)[:7]) for day in range(first, last + 1)]
    return None


def day_year(day: int) -> int:
    return (date(1970, 1, 1) + timedelta(days=day)).year


def _by_years(
    dated: list[tuple[int, int, int, int]], undated: list[tuple[int, int, int, int]]
) -> tuple[str, list[tuple[str, int, int, int]]]:
    """Buckets of 1, 10 or 100 years, whichever gives at most 60; empty ones are zero."""
    first, last = day_year(dated[0][0]), day_year(dated[-1][0])
    step = next(s for s in (1, 10, 100, 1000) if (last - first) // s < 60)
    unit = {1: "year", 10: "decade", 100: "century", 1000: "millennium"}[step]
    out = {start: [0, 0, 0] for start in range(first - first % step, last + 1, step)}
    for day, *counts in dated:
        bucket = out[day_year(day) // step * step]
        for i, n in enumerate(counts):
            bucket[i] += n
    label = "{0}" if step == 1 else "{0}s" if step == 10 else "{0}-{1}"
    series = [(label.format(start, start + step - 1), u, d, o) for start, (u, d, o) in out.items()]
    series += [("no date", u, d, o) for _day, u, d, o in undated]
    return unit, series


def _days(leaving: Leaving) -> str:
    unit, series = _buckets(leaving.by_day())
    return (
        f'<h3 id="days">By {_e(unit)} (metadata updated_at, UTC)</h3>'
        + columns("days", f"Ratings by {unit}", series)
        + table(
            [unit, "up", "down", "other", "total"],
            (
                (_e(label), _n(u), _n(d), _n(o), _n(u + d + o))
                for label, u, d, o in series
                if u + d + o
            ),
            (1, 2, 3, 4),
        )
    )


def _raters(leaving: Leaving, limit: int) -> str:
    raters = leaving.raters.most_common()
    top = raters[0][1] if raters else 0
    return (
        '<h3 id="raters">By rater (pseudonymous Open WebUI user id, as it leaves)</h3>'
        f"<p>{_n(len(raters))} rater(s); the most active rated {_n(top)} time(s) "
        f"({_pct(top, leaving.lines)} of the lines).</p>"
        + table(
            ["user id", "lines", "share"],
            (
                (f'<span class="mono">{_e(u)}</span>', _n(n), _pct(n, leaving.lines))
                for u, n in raters[:limit]
            ),
            (1, 2),
        )
        + shown(min(limit, len(raters)), len(raters), "raters")
    )


def _previous(comparison: Comparison | None) -> str:
    if comparison is None:
        return (
            '<h3 id="previous">Against the previous handoff</h3><p class="note">No '
            f"{option('previous')} file was given: every line is shown as it is, not as a "
            "change.</p>"
        )
    c = comparison
    counts = table(
        ["", "ratings"],
        [
            ("new (not in the previous file)", f'<span id="prev-new">{_n(c.new)}</span>'),
            (
                "changed (replay would update them)",
                f'<span id="prev-changed">{_n(c.changed)}</span>',
            ),
            ("of which the value changed", _n(c.value_flips)),
            ("unchanged", _n(c.unchanged)),
            (
                "removed (in the previous file only)",
                f'<span id="prev-removed">{_n(c.removed)}</span>',
            ),
        ],
        (1,),
    )

    def value(p: dict[str, Any] | None) -> str:
        return "-" if p is None else f"{p.get('value', '?'):+d}"

    changes = table(
        ["feedback id", "value before", "value now", "what changed"],
        (
            (
                f'<span class="mono">{_e(ch.feedback_id)}</span>',
                value(ch.before),
                value(ch.after),
                _e(", ".join(ch.changed_keys())),
            )
            for ch in c.changes
        ),
    )
    removals = table(
        ["feedback id", "value", "model"],
        (
            (
                f'<span class="mono">{_e(ch.feedback_id)}</span>',
                value(ch.before),
                _e((ch.before.get("metadata") or {}).get("model_id", "")),
            )
            for ch in c.removals
        ),
    )
    return (
        f'<h3 id="previous">Against the previous handoff ({_e(c.previous_path.name)}, '
        f"{_n(c.previous_lines)} lines)</h3>"
        + counts
        + "<h3>Changed ratings</h3>"
        + changes
        + shown(len(c.changes), c.changed, "changed ratings")
        + "<h3>Removed ratings</h3>"
        + '<p class="note">A rating the previous handoff had and this one does not is not '
        "deleted at Portkey by replay: it stays as it was delivered.</p>"
        + removals
        + shown(len(c.removals), c.removed, "removed ratings")
    )


def _withdrawals(leaving: Leaving) -> str:
    head = '<h3 id="withdrawals">Withdrawals (metadata withdrawn = "true")</h3>'
    if not leaving.withdrawn:
        return head + "<p>None: no line is marked withdrawn.</p>"
    return (
        head
        + f"<p>{_n(leaving.withdrawn)} line(s) withdraw a rating.</p>"
        + table(
            ["line", "feedback id", "model", "day", "value"],
            (
                (
                    _n(r.line),
                    f'<span class="mono">{_e(r.feedback_id)}</span>',
                    _e(r.model),
                    _e(day_text(r.day)),
                    _e(r.value),
                )
                for r in leaving.withdrawn_rows
            ),
            (0,),
        )
        + shown(len(leaving.withdrawn_rows), leaving.withdrawn, "withdrawals")
    )


def _key_kind(key: str) -> str:
    from owui_replay.report_data import FREE_TEXT, STRUCTURAL

    if key in STRUCTURAL:
        return "id, time or flag"
    return "free text" if key.rpartition(".")[2] in FREE_TEXT else "other (searched)"


def _keys(leaving: Leaving) -> str:
    rows = sorted(leaving.keys.items(), key=lambda kv: (-kv[1], kv[0]))
    return '<h3 id="keys">Metadata keys that leave</h3>' + table(
        ["key", "lines carrying it", "share", "kind"],
        (
            (
                f'<span class="mono">{_e(k)}</span>',
                f"<span data-key-lines>{_n(n)}</span>",
                _pct(n, leaving.lines),
                _e(_key_kind(k)),
            )
            for k, n in rows
        ),
        (1, 2),
    )


def _personal(leaving: Leaving) -> str:
    kinds = table(
        ["kind", "findings", "lines"],
        (
            (
                _e(k),
                f'<span id="pii-{k.split()[0].lower()}">{_n(leaving.pii_matches[k])}</span>',
                _n(leaving.pii_lines[k]),
            )
            for k in KINDS
        ),
        (1, 2),
    )
    keys = table(
        ["key", "values with a finding"],
        ((f'<span class="mono">{_e(k)}</span>', _n(n)) for k, n in leaving.pii_keys.most_common()),
        (1,),
    )
    rows = table(
        ["line", "key", "value", "found"],
        (
            (
                _n(r.line),
                f'<span class="mono">{_e(r.key)}</span>',
                f'<span class="text">{highlighted(r.value)}</span>',
                _e(", ".join(r.kinds)),
            )
            for r in leaving.pii_rows
        ),
        (0,),
        cls="pii-rows",
    )
    return (
        '<h3 id="pii">Likely personal data in what leaves</h3>'
        "<p>Every metadata value except ids, times and flags was searched for e-mail "
        "addresses, phone numbers, URLs, IP addresses and key-like strings (tokens, API keys). "
        "A pattern can be wrong both ways: read the free text below too.</p>"
        + kinds
        + keys
        + rows
        + shown(len(leaving.pii_rows), leaving.pii_values, "values with a finding")
    )


def _free_text(leaving: Leaving) -> str:
    by_key = ", ".join(f"{k}: {_n(n)}" for k, n in leaving.text_by_key.most_common())
    return (
        '<h3 id="text">Free text that leaves (comments, reasons, tags)</h3>'
        f"<p>{_n(leaving.text_values)} value(s) in {_n(leaving.text_lines)} line(s)"
        + (f" ({_e(by_key)})" if by_key else "")
        + ". Likely personal data is <mark>marked</mark>; invisible and direction-changing "
        "characters are shown as their code point, e.g. ⟨U+202E⟩.</p>"
        + table(
            ["line", "feedback id", "key", "value"],
            (
                (
                    _n(r.line),
                    f'<span class="mono">{_e(r.feedback_id)}</span>',
                    f'<span class="mono">{_e(r.key)}</span>',
                    f'<span class="text">{highlighted(r.value)}</span>',
                )
                for r in leaving.text_rows
            ),
            (0,),
            cls="free-text",
        )
        + shown(len(leaving.text_rows), leaving.text_values, "free-text values")
    )


def _stays(page: Page) -> str:
    return (
        '<section><h2 id="stays">3. What stays</h2>'
        + _rejects(page.rejects, page.rows)
        + _dropped(page)
        + "</section>"
    )


def _rejects(rejects: Rejects | None, limit: int) -> str:
    head = '<h3 id="rejects">Rejected and filtered records, by reason</h3>'
    if rejects is None:
        return head + "<p>The rejects file is missing.</p>"
    rows = sorted(rejects.by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    chart = hbars(
        "rejects",
        "Records that stay, by reason",
        [(f"{reason} ({outcome})", [(OTHER, n)]) for (outcome, reason), n in rows],
    )
    damaged = (
        f'<p class="fail">{_n(rejects.damaged)} line(s) are not reject entries.</p>'
        if rejects.damaged
        else ""
    )
    return (
        head + f"<p>{_n(rejects.lines)} record(s) stay; the rejects file keeps each with its "
        "reason (the record itself is not shown here).</p>"
        + (chart if rows else "")
        + table(
            ["reason", "outcome", "records", "meaning"],
            (
                (f'<span class="mono">{_e(r)}</span>', _e(o), _n(n), _e(REASONS.get(r, "")))
                for (o, r), n in rows
            ),
            (2,),
        )
        + damaged
        + "<h3>The first rejects</h3>"
        + table(
            ["line", "record index", "feedback id", "outcome", "reason", "detail"],
            (
                (
                    _n(r.line),
                    _e(r.index),
                    f'<span class="mono">{_e(r.record_id)}</span>',
                    _e(r.outcome),
                    _e(r.reason),
                    f'<span class="text">{_e(r.detail)}</span>',
                )
                for r in rejects.rows
            ),
            (0, 1),
        )
        + shown(len(rejects.rows), rejects.lines, "rejects")
    )


def _dropped(page: Page) -> str:
    options = _part(page.manifest or {}, "options")
    keep, drop = options.get("keep_metadata") or [], options.get("drop_metadata") or []
    patterns = table(
        ["option", "patterns"],
        [
            (
                f"{command_option('convert', 'keep-metadata')} (only matching keys leave)",
                _e(", ".join(keep) or "none"),
            ),
            (
                f"{command_option('convert', 'drop-metadata')} / "
                f"{command_option('convert', 'drop-comments')} (matching keys stay)",
                _e(", ".join(drop) or "none"),
            ),
        ],
    )
    head = '<h3 id="dropped">Metadata the options keep back</h3>' + patterns
    dropped = page.dropped
    if not keep and not drop:
        return head + "<p>No metadata option was used: every key convert makes leaves.</p>"
    if dropped is None:
        return head + (
            f'<p class="note">Pass {option("export")} to count the keys these options removed (the '
            "export is converted again without them).</p>"
        )
    if dropped.error:
        return head + f'<p class="fail">Could not count them: {_e(dropped.error)}</p>'
    return (
        head
        + f"<p>{_n(dropped.lines)} line(s) lost at least one key to these options.</p>"
        + table(
            ["key kept back", "lines it was removed from"],
            (
                (f'<span class="mono">{_e(k)}</span>', _n(n))
                for k, n in sorted(dropped.keys.items(), key=lambda kv: (-kv[1], kv[0]))
            ),
            (1,),
            cls="dropped",
        )
    )


def _signoff(page: Page) -> str:
    rows = [(_e(label), "") for label in ("Reviewed by", "Role", "Date", "Decision", "Signature")]
    return (
        '<section><h2 id="signoff">Sign-off</h2>'
        f"<p>This page shows the handoff whose manifest has sha256 "
        f'<span class="hash">{_e(page.manifest_sha256 or "(no manifest)")}</span>. '
        "An electronic approval is `owui-replay approve`; this box is for paper.</p>"
        + pairs(rows, cls="signoff")
        + "</section>"
    )


def _footer(page: Page) -> str:
    return (
        f"<footer>{_e(page.feedback.name)} · manifest sha256 "
        f'<span class="hash">{_e(page.manifest_sha256 or "none")}</span> · owui-replay '
        f"{_e(page.tool_version)} · {_e(page.generated)}</footer>"
    )
