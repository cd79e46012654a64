"""Charts as inline SVG, drawn on the server: no script, nothing fetched, readable by a screen
reader (``role="img"`` with the title) and testable as text.

The values are Decimals; they become floats only to place points on the drawing, never in a
label: every number written on a chart is the Decimal formatted as text.
"""

from __future__ import annotations

from decimal import Decimal
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 640, 220
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 84, 16, 28, 36
#: One colour per series, in order (colour-blind safe, Okabe-Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


_NO_DATA = f'<text x="{PAD_LEFT}" y="{HEIGHT / 2}" fill="#555">no data yet</text>'


def _fmt(value: Decimal, unit: str) -> str:
    text = f"{value.normalize():f}" if value == value.to_integral() else f"{value:.2f}"
    return f"{text} {unit}".strip()


def _scale(values: list[Decimal]) -> tuple[Decimal, Decimal]:
    low = min([Decimal(0), *values])
    high = max([Decimal(0), *values])
    if high == low:
        high = low + 1
    return low, high


def _frame(title: str, body: str, legend: str = "") -> Markup:
    t = escape(title)
    # every value interpolated below is escaped (titles, labels) or a number we formatted
    return Markup(  # noqa: S704
        f'<svg class="chart" role="img" aria-label="{t}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{t}</title>"
        f'<text x="{PAD_LEFT}" y="16" class="chart-title" font-size="13" '
        f'font-weight="600">{t}</text>'
        f"{body}{legend}</svg>"
    )


def _axes(low: Decimal, high: Decimal, unit: str) -> str:
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    out = []
    for i in range(5):
        value = low + (high - low) * Decimal(i) / 4
        y = PAD_TOP + plot_h - plot_h * i / 4
        out.append(
            f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#d0d4da" stroke-width="1"/>'
            f'<text x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10" '
            f'fill="#555">{escape(_fmt(value, unit))}</text>'
        )
    return "".join(out)


def _x_labels(labels: list[str]) -> str:
    if not labels:
        return ""
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    step = max(1, len(labels) // 8)
    out = []
    for i, label in enumerate(labels):
        if i % step:
            continue
        x = PAD_LEFT + plot_w * (i + 0.5) / len(labels)
        out.append(
            f'<text x="{x:.1f}" y="{HEIGHT - PAD_BOTTOM + 16}" text-anchor="middle" '
            f'font-size="10" fill="#555">{escape(label)}</text>'
        )
    return "".join(out)


def line_chart(
    series: dict[str, list[tuple[str, Decimal | None]]], *, title: str, unit: str = ""
) -> Markup:
    """One line per series over shared x labels (e.g. months "2026-11"); a None is a gap."""
    labels: list[str] = []
    for points in series.values():
        for label, _ in points:
            if label not in labels:
                labels.append(label)
    labels.sort()
    values = [v for points in series.values() for _, v in points if v is not None]
    if not labels or not values:
        return _frame(
            title, f'<text x="{PAD_LEFT}" y="{HEIGHT / 2}" fill="#555">no data yet</text>'
        )
    low, high = _scale(values)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    index = {label: i for i, label in enumerate(labels)}
    body = [_axes(low, high, unit), _x_labels(labels)]
    legend = []
    for n, (name, points) in enumerate(series.items()):
        colour = PALETTE[n % len(PALETTE)]
        segments: list[list[str]] = [[]]
        for label, value in sorted(points):
            if value is None:
                segments.append([])
                continue
            x = PAD_LEFT + plot_w * (index[label] + 0.5) / len(labels)
            y = PAD_TOP + plot_h - plot_h * float((value - low) / (high - low))
            segments[-1].append(f"{x:.1f},{y:.1f}")
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                f"<title>{escape(name)} {escape(label)}: {escape(_fmt(value, unit))}</title>"
                "</circle>"
            )
        for seg in segments:
            if len(seg) > 1:
                body.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                    f'points="{" ".join(seg)}"/>'
                )
        if len(series) > 1:
            lx = PAD_LEFT + 130 * n
            legend.append(
                f'<rect x="{lx}" y="{HEIGHT - 12}" width="10" height="10" fill="{colour}"/>'
                f'<text x="{lx + 14}" y="{HEIGHT - 3}" font-size="10">{escape(name)}</text>'
            )
    return _frame(title, "".join(body), "".join(legend))


def bar_chart(bars: list[tuple[str, Decimal]], *, title: str, unit: str = "") -> Markup:
    """One bar per label, in the order given."""
    if not bars:
        return _frame(
            title, f'<text x="{PAD_LEFT}" y="{HEIGHT / 2}" fill="#555">no data yet</text>'
        )
    low, high = _scale([v for _, v in bars])
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    zero_y = PAD_TOP + plot_h - plot_h * float((0 - low) / (high - low))
    width = plot_w / len(bars)
    body = [_axes(low, high, unit), _x_labels([label for label, _ in bars])]
    for i, (label, value) in enumerate(bars):
        y = PAD_TOP + plot_h - plot_h * float((value - low) / (high - low))
        top, height = min(y, zero_y), abs(zero_y - y)
        body.append(
            f'<rect class="bar" x="{PAD_LEFT + width * i + width * 0.15:.1f}" y="{top:.1f}" '
            f'width="{width * 0.7:.1f}" height="{max(height, 0.5):.1f}" fill="{PALETTE[0]}">'
            f"<title>{escape(label)}: {escape(_fmt(value, unit))}</title></rect>"
        )
    return _frame(title, "".join(body))
