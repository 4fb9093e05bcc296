"""A server-side SVG bar chart of sent, delivered and failed texts per day. Pure."""

from __future__ import annotations

from datetime import date
from html import escape

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 12, 36
SERIES = (("sent", "#1f5f99"), ("delivered", "#2e7d32"), ("failed", "#b3261e"))


def _nice_max(value: int) -> int:
    """An axis top of four equal, round, whole steps (1, 2 or 5 times a power of ten)."""
    needed = max(value, 1) / 4
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= needed:
                return 4 * step * magnitude
        magnitude *= 10


def daily_chart(days: list[tuple[date, int, int, int]], *, title: str) -> str:
    """Render grouped bars (sent, delivered, failed) for each day, with a text alternative."""
    top = _nice_max(max((max(d[1:]) for d in days), default=0))
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(days), 1)
    bar = max(slot / 4, 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="chart-title chart-desc" class="chart">',
        f'<title id="chart-title">{escape(title)}</title>',
        f'<desc id="chart-desc">{escape(_describe(days))}</desc>',
    ]
    for tick in range(5):
        value = top * tick // 4
        y = TOP + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{value}</text>'
        )
    for index, (day, *values) in enumerate(days):
        x0 = LEFT + index * slot + (slot - 3 * bar) / 2
        for series, ((name, colour), value) in enumerate(zip(SERIES, values, strict=True)):
            height = plot_h * value / top
            x = x0 + series * bar
            y = TOP + plot_h - height
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                f'fill="{colour}"><title>{day:%b %d} {name}: {value}</title></rect>'
            )
        if index % 5 == 0 or index == len(days) - 1:
            parts.append(
                f'<text x="{LEFT + index * slot + slot / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                f'text-anchor="middle" class="axis">{day:%b %d}</text>'
            )
    for series, (name, colour) in enumerate(SERIES):
        x = LEFT + series * 110
        parts.append(
            f'<rect x="{x}" y="{HEIGHT - 12}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="{HEIGHT - 3}" class="axis">{name}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _describe(days: list[tuple[date, int, int, int]]) -> str:
    if not days:
        return "No texts in this period."
    sent = sum(d[1] for d in days)
    delivered = sum(d[2] for d in days)
    failed = sum(d[3] for d in days)
    return (
        f"From {days[0][0]:%B %d} to {days[-1][0]:%B %d}: {sent} sent, "
        f"{delivered} delivered, {failed} failed."
    )
