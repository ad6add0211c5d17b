"""The blocks a rendered report is made of, in each text format: a section, a paragraph."""

from __future__ import annotations

import html


def section(heading: str, table: str, fmt: str) -> str:
    """One section of a rendered report: its heading as `fmt` writes one, then its table."""
    if fmt == "markdown":
        return f"### {heading}\n\n{table}"
    if fmt == "html":
        return f"<h3>{html.escape(heading)}</h3>\n{table}"
    if fmt == "latex":
        return f"% {heading}\n{table}"
    return f"{heading}\n{table}"


def paragraph(text: str, fmt: str) -> str:
    """A paragraph of prose (a legend) as `fmt` writes one."""
    return {"html": f"<p>{html.escape(text)}</p>", "latex": f"% {text}"}.get(fmt, text)
