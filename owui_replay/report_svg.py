"""Bar charts as inline SVG, written by hand: no script, no font, nothing to load.

Readable in greyscale and on paper: thumbs up are solid dark bars, thumbs down white bars with
a dark diagonal hatch and outline, anything else mid grey; every bar has its number written
beside it. A chart library would bring JavaScript or a dependency for three shapes of chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

INK = "#222"
GREY = "#8a8a8a"
FONT = 'font-family="sans-serif" font-size="12"'
LABEL_CHARS = 36


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _short(label: str, limit: int = LABEL_CHARS) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _defs(prefix: str) -> str:
    return (
        f'<defs><pattern id="{prefix}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{INK}" stroke-width="2"/></pattern></defs>'
    )


def _fill(prefix: str, kind: str) -> str:
    if kind == "down":
        return f'fill="url(#{prefix}-hatch)" stroke="{INK}" stroke-width="1"'
    return f'fill="{INK if kind == "up" else GREY}"'


def legend(prefix: str, kinds: Sequence[tuple[str, str]], x: int, y: int) -> str:
    """Swatches and names for (kind, label) pairs, in one row."""
    out = []
    for kind, label in kinds:
        out.append(f'<rect x="{x}" y="{y}" width="14" height="12" {_fill(prefix, kind)}/>')
        out.append(f'<text x="{x + 20}" y="{y + 10}" {FONT}>{_e(label)}</text>')
        x += 34 + 7 * len(label)
    return "".join(out)


def _svg(prefix: str, width: int, height: int, title: str, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" class="chart" aria-labelledby="{prefix}-t">'
        f'<title id="{prefix}-t">{_e(title)}</title>{_defs(prefix)}{body}</svg>'
    )


def hbars(prefix: str, title: str, rows: Sequence[tuple[str, Sequence[tuple[str, int]]]]) -> str:
    """Horizontal bars: one group per (label, [(kind, count), ...]), bars of a group stacked
    under each other (up and down side by side), the count at each bar's end."""
    label_w, bar_w, bar_h, gap = 250, 380, 14, 10
    biggest = max((n for _label, bars in rows for _kind, n in bars), default=0) or 1
    kinds = list(dict.fromkeys(kind for _label, bars in rows for kind, _n in bars))
    y = 28
    body = [legend(prefix, [(k, k) for k in kinds], label_w, 4)] if len(kinds) > 1 else []
    for label, bars in rows:
        top = y
        for kind, n in bars:
            width = max(round(bar_w * n / biggest), 1 if n else 0)
            body.append(
                f'<rect x="{label_w}" y="{y}" width="{width}" height="{bar_h}" '
                f"{_fill(prefix, kind)}/>"
                f'<text x="{label_w + width + 5}" y="{y + 11}" {FONT}>{n:,}</text>'
            )
            y += bar_h + 2
        middle = (top + y) // 2 + 4
        body.append(
            f'<text x="{label_w - 8}" y="{middle}" text-anchor="end" {FONT}>'
            f"{_e(_short(label))}</text>"
        )
        y += gap
    return _svg(prefix, label_w + bar_w + 80, y + 4, title, "".join(body))


def columns(prefix: str, title: str, series: Sequence[tuple[str, int, int, int]]) -> str:
    """Vertical stacked columns over time: (label, up, down, other) each; the total above
    each column (turned upright when columns are narrow), labels under them."""
    count = max(len(series), 1)
    plot_h, left, top = 220, 10, 60
    step = max(min(60, 900 // count), 14)
    width = max(left + step * count + 20, 300)
    biggest = max((u + d + o for _l, u, d, o in series), default=0) or 1
    narrow = step < 34
    body = [legend(prefix, [("up", "up"), ("down", "down"), ("other", "other")], left, 4)]
    base = top + plot_h
    body.append(f'<line x1="{left}" y1="{base}" x2="{width - 10}" y2="{base}" stroke="{INK}"/>')
    for i, (label, up, down, other) in enumerate(series):
        x = left + i * step + 2
        w = step - 4
        y = base
        for kind, n in (("up", up), ("down", down), ("other", other)):
            h = round(plot_h * n / biggest)
            if h:
                y -= h
                body.append(
                    f'<rect x="{x}" y="{y}" width="{w}" height="{h}" {_fill(prefix, kind)}/>'
                )
        total = up + down + other
        cx = x + w // 2
        if narrow:
            body.append(
                f'<text x="{cx + 4}" y="{y - 4}" transform="rotate(-90 {cx + 4} {y - 4})" '
                f"{FONT}>{total:,}</text>"
            )
        else:
            body.append(f'<text x="{cx}" y="{y - 4}" text-anchor="middle" {FONT}>{total:,}</text>')
        body.append(
            f'<text x="{cx + 4}" y="{base + 8}" transform="rotate(60 {cx + 4} {base + 8})" '
            f"{FONT}>{_e(label)}</text>"
        )
    return _svg(prefix, width, base + 80, title, "".join(body))
