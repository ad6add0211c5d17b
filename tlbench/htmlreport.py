"""`tlbench report --html`: the comparison as one standalone page.

One HTML file that opens anywhere, offline, with no server: every asset is
inside it (the style sheet inline, the figure as an SVG data URI, no script,
no web font). It holds

- the comparison table of each section (`tlbench.report`: the same rows,
  cells, 95% intervals, Pareto `*` and tie `=` marks as the terminal table),
  with each row's interval drawn to the section's scale;
- the figure of `tlbench report --plot` (`tlbench.plot.plot_comparison`):
  accuracy against training time with the Pareto frontier, the learning
  curves, and accuracy against budget when the runs have budgets; without
  matplotlib, a note saying how to get it;
- where the results hold a full grid, the ranking check of `tlbench report`
  (`tlbench.select.report_checks`: how well each transferability score, the
  probe and parameter count ranked the fine-tuned backbones);
- the environment the runs ran in: each distinct tlbench, torch, Python,
  platform and device, with how many runs had it.

Everything taken from records (names, paths, reasons, versions) is escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tlbench.errors import TlbenchError
from tlbench.report import NAME_COLUMNS, Row, group_rows
from tlbench.tables import legend, section_cells

#: environment fields shown, in this order, with their labels (`tlbench.provenance.environment`).
ENVIRONMENT_FIELDS = (
    ("tlbench", "tlbench"),
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("python", "Python"),
    ("platform", "platform"),
    ("device", "device type"),
    ("device_name", "device"),
    ("cuda", "CUDA"),
    ("cpu_count", "CPU cores"),
    ("cpu_threads", "torch threads"),
    ("plugins", "plugins"),
    ("git_sha", "git commit"),
)

#: the figure's caption: what each panel shows (tlbench.plot).
FIGURE_CAPTION = (
    "Left: top-1 against training seconds (log scale), one point per row, error bars the std "
    "over seeds; the staircase is the Pareto frontier, the best accuracy reachable for at most "
    "that much training. Middle: held-out accuracy after every epoch (mean over seeds). "
    "Right, when runs have data budgets: top-1 against the budget, with 95% intervals."
)

NO_MATPLOTLIB = (
    "The figure (accuracy against training time with the Pareto frontier, and the learning "
    "curves) needs matplotlib, which is not installed: pip install 'tlbench[plot]', then "
    "write the page again."
)

STYLE = """
:root { color-scheme: light; --ink: #1d2430; --muted: #5b6472; --line: #d9dee5;
  --band: #f5f7fa; --accent: #1f77b4; --pareto: #2ca02c; --tie: #9467bd; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    sans-serif; }
main { max-width: 1500px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 20px 0 6px; }
p { margin: 6px 0; }
.meta, .legend, figcaption, .note-text { color: var(--muted); }
.legend, .ranking p { font-size: 12px; max-width: 1100px; color: var(--muted); }
code { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: var(--band); padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
nav ul { margin: 6px 0; padding-left: 20px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 9px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { text-align: left; font-weight: 600; background: var(--band); white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.name { white-space: nowrap; }
td.note { color: var(--muted); max-width: 420px; }
td.mark { text-align: center; font-weight: 700; }
tr.pareto td.mark.pareto { color: var(--pareto); }
tr.tie td.mark.tie { color: var(--tie); }
tr.pareto td:first-child { box-shadow: inset 3px 0 0 var(--pareto); }
tr.no-result td { color: var(--muted); }
tr.no-result td.note { color: #a33; }
tbody tr:hover { background: #fafbfd; }
.ci { display: block; position: relative; height: 6px; margin-top: 3px; min-width: 120px;
  background: var(--band); border-radius: 3px; }
.ci .band { position: absolute; top: 0; height: 6px; background: #9cc3e4; border-radius: 3px; }
.ci .mean { position: absolute; top: -1px; width: 2px; height: 8px; background: var(--accent); }
figure { margin: 8px 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line);
  background: #fff; }
.missing { border-left: 3px solid #e0a800; background: #fff8e1; padding: 8px 12px;
  max-width: 900px; }
table.environment td { vertical-align: baseline; }
table.environment td.value { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas,
  monospace; overflow-wrap: anywhere; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"""


def _e(value: Any) -> str:
    """Text from records, escaped for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def check_html_output(
    path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]
) -> Path:
    """The page `--html` may write, checked before any work: not a folder, not a results file
    (one being read or any file of run records), in a place that can be written."""
    from tlbench.results import check_report_output

    return check_report_output(path, inputs, flag="--html", example="report.html")


def figure_data_uri(rows: list[Row], records: list[dict[str, Any]]) -> str | None:
    """`plot_comparison`'s figure as an SVG data URI, or None when matplotlib is missing."""
    from tlbench.plot import _figure_class, plot_comparison

    try:
        _figure_class()
    except TlbenchError:
        return None
    with tempfile.TemporaryDirectory(prefix="tlbench-html-") as tmp:
        path = plot_comparison(rows, records, Path(tmp) / "figure.svg")
        data = path.read_bytes()
    return "data:image/svg+xml;base64," + base64.b64encode(data).decode("ascii")


def environment_summary(records: list[dict[str, Any]]) -> tuple[list[tuple[str, list]], int]:
    """Per environment field, its distinct values with how many records had each (most
    common first); and how many records hold no environment at all."""
    envs = [r.get("environment") for r in records]
    found = [e for e in envs if isinstance(e, dict) and e]
    out: list[tuple[str, list[tuple[str, int]]]] = []
    for field, label in ENVIRONMENT_FIELDS:
        counts: Counter[str] = Counter()
        for env in found:
            if field not in env or env[field] in (None, "", {}):
                continue
            value = env[field]
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in sorted(value.items()))
            counts[str(value)] += 1
        if counts:
            out.append((label, sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))
    return out, len(records) - len(found)


def _interval_bar(row: Row, low: float, high: float) -> str:
    """The row's mean and 95% interval on its section's scale `[low, high]`, as inline CSS."""
    if row.accuracy is None or high <= low:
        return ""

    def at(value: float) -> float:
        return 100 * (min(max(value, low), high) - low) / (high - low)

    parts = []
    if row.ci_low is not None and row.ci_high is not None:
        left, right = at(row.ci_low), at(row.ci_high)
        parts.append(
            f'<span class="band" style="left:{left:.2f}%;width:{right - left:.2f}%"></span>'
        )
    parts.append(f'<span class="mean" style="left:calc({at(row.accuracy):.2f}% - 1px)"></span>')
    return f'<span class="ci" aria-hidden="true">{"".join(parts)}</span>'


def _scale(group: list[Row]) -> tuple[float, float]:
    values = [
        v
        for r in group
        if r.accuracy is not None
        for v in (r.accuracy, r.ci_low, r.ci_high)
        if v is not None
    ]
    if not values:
        return 0.0, 1.0
    low, high = max(0.0, min(values)), min(1.0, max(values))
    pad = max(0.01, 0.05 * (high - low))
    return max(0.0, low - pad), min(1.0, high + pad)


def _table(title: str, group: list[Row], group_by: str, index: int) -> str:
    header, section = section_cells(group, group_by)
    low, high = _scale(group)
    head = "".join(
        f'<th class="{"name" if c in (*NAME_COLUMNS, "note") else "num"}" scope="col">{_e(c)}</th>'
        for c in header
    )
    body = []
    for row, cells in zip(group, section, strict=True):
        classes = []
        if row.accuracy is None:
            classes.append("no-result")
        if row.pareto:
            classes.append("pareto")
        if row.tie:
            classes.append("tie")
        tds = []
        for name, cell in zip(header, cells, strict=True):
            text = _e(" ".join(cell.splitlines()))
            if name in NAME_COLUMNS:
                tds.append(f'<td class="name">{text}</td>')
            elif name == "note":
                tds.append(f'<td class="note">{text}</td>')
            elif name == "pareto":
                tip = ' title="Pareto-optimal: no other row is more accurate and cheaper"'
                tds.append(f'<td class="mark pareto"{tip if cell else ""}>{text}</td>')
            elif name == "tie":
                tip = ' title="cannot be told apart from the best row (95%)"'
                tds.append(f'<td class="mark tie"{tip if cell else ""}>{text}</td>')
            elif name == "top-1 %":
                tds.append(f'<td class="num">{text}{_interval_bar(row, low, high)}</td>')
            else:
                tds.append(f'<td class="num">{text}</td>')
        css = f' class="{" ".join(classes)}"' if classes else ""
        body.append(f"<tr{css}>{''.join(tds)}</tr>")
    heading = f"{group_by}: {title}" if group_by != "none" else title
    return (
        f'<h3 id="section-{index}">{_e(heading)}</h3>\n'
        f'<div class="scroll"><table class="comparison" data-section="{_e(title)}">'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody></table></div>"
    )


def _environment(records: list[dict[str, Any]]) -> str:
    fields, without = environment_summary(records)
    if not fields:
        return '<p class="note-text">The records hold no environment.</p>'
    rows = []
    for label, values in fields:
        for i, (value, n) in enumerate(values):
            name = f'<th scope="row" rowspan="{len(values)}">{_e(label)}</th>' if i == 0 else ""
            runs = f"{n} run" + ("" if n == 1 else "s")
            rows.append(
                f'<tr>{name}<td class="value">{_e(value)}</td><td class="num">{runs}</td></tr>'
            )
    note = (
        f'<p class="note-text">{without} record(s) hold no environment (written before it was '
        "recorded, or a run that stopped before it started).</p>"
        if without
        else ""
    )
    return (
        '<table class="environment"><thead><tr><th>field</th><th>value</th>'
        '<th class="num">runs</th></tr></thead><tbody>\n'
        + "\n".join(rows)
        + f"\n</tbody></table>{note}"
    )


def render_page(
    rows: list[Row],
    records: list[dict[str, Any]],
    *,
    sources: Iterable[str | os.PathLike[str]] = (),
    group_by: str = "dataset",
    figure: str | None = None,
    figure_note: str = NO_MATPLOTLIB,
    checks: list[Any] | None = None,
    pareto_by: str = "train",
) -> str:
    """The page as text. `figure` is an image data URI (`figure_data_uri`); without one,
    `figure_note` stands in its place. `checks`: `tlbench.select.report_checks(records)`;
    `pareto_by`: the cost the rows' Pareto marks weighed (the legend says which)."""
    from tlbench.version import __version__

    sources = [str(s) for s in sources]
    groups = group_rows(rows, group_by)
    statuses = Counter(str(r.get("status")) for r in records)
    counted = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items(), key=lambda kv: -kv[1]))
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    files = ", ".join(f"<code>{_e(s)}</code>" for s in sources) or "records given in Python"
    title = "tlbench report" + (f": {', '.join(Path(s).name for s in sources)}" if sources else "")
    contents = "".join(
        f'<li><a href="#section-{i}">{_e(t)}</a> ({len(g)} row{"" if len(g) == 1 else "s"})</li>'
        for i, (t, g) in enumerate(groups.items())
    )
    tables = "\n".join(_table(t, g, group_by, i) for i, (t, g) in enumerate(groups.items()))
    shown = _figure_html(figure, figure_note)
    ranking, ranking_link = _ranking_html(checks)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="tlbench {_e(__version__)}">
<title>{_e(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<header>
<h1>tlbench report</h1>
<p class="meta">{len(records)} run record(s) ({_e(counted)}) from {files}.
Written {now} by tlbench {_e(__version__)}.</p>
</header>
<nav><ul>
<li><a href="#comparison">Comparison</a><ul>{contents}</ul></li>
<li><a href="#figure">Accuracy against cost, learning curves</a></li>
{ranking_link}
<li><a href="#environment">Environment</a></li>
</ul></nav>
<section id="comparison">
<h2>Comparison</h2>
{tables}
<p class="legend">{_e(legend(pareto_by))}</p>
</section>
<section id="figure">
<h2>Accuracy against cost, learning curves</h2>
{shown}
</section>
{ranking}
<section id="environment">
<h2>Environment</h2>
{_environment(records)}
</section>
<footer>Standalone page: no server, no network; everything it shows is in this file.</footer>
</main>
</body>
</html>
"""


def _figure_html(figure: str | None, note: str) -> str:
    """The figure (an image data URI) with its caption, or the note that stands for it."""
    if figure is None:
        return f'<p class="missing">{_e(note)}</p>'
    return (
        f'<figure><img src="{_e(figure)}" alt="Top-1 accuracy against training time with '
        'the Pareto frontier, and the learning curves, per dataset">'
        f"<figcaption>{_e(FIGURE_CAPTION)}</figcaption></figure>"
    )


def _ranking_html(checks: list[Any] | None) -> tuple[str, str]:
    """The ranking-check section and its contents link, or nothing without checks."""
    if not checks:
        return "", ""
    from tlbench.ranking import render_checks

    # tabulate escapes the cells and the report's text blocks the headings.
    section = (
        '<section id="ranking">\n<h2>Ranking check</h2>\n<div class="ranking">'
        f"{render_checks(checks, 'html')}</div>\n</section>"
    )
    return section, '<li><a href="#ranking">Ranking check</a></li>'


#: rules of `STYLE` that style the page, not its tables: left out of a fragment.
_PAGE_ONLY = (":root", "*", "body", "main", "h1", "h2", "nav ul", "footer", "figure", "figure img")


def _scoped_style(scope: str) -> str:
    """`STYLE`'s table rules with every selector under `scope`, and its colours on `scope`:
    a fragment styled like the page that leaves the rest of a notebook or a page alone."""
    rules = [r.strip() for r in STYLE.split("}") if r.strip()]
    out = []
    for rule in rules:
        selectors, _, body = rule.partition("{")
        selectors = selectors.strip()
        if selectors == ":root":
            out.append(f"{scope} {{{body.replace('color-scheme: light;', '')}}}")
        elif selectors not in _PAGE_ONLY:
            scoped = ", ".join(f"{scope} {s.strip()}" for s in selectors.split(","))
            out.append(f"{scoped} {{{body}}}")
    font = 'font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif;'
    out.append(f"{scope} {{ color: var(--ink); {font} }}")
    return "\n".join(out)


def render_fragment(
    rows: list[Row],
    group_by: str = "dataset",
    checks: list[Any] | None = None,
    pareto_by: str = "train",
) -> str:
    """The comparison tables of the page, with their style (scoped to them), the intervals
    drawn to scale and the marks, without the rest of the page: what `tlbench report
    --format html` writes and a notebook shows."""
    groups = group_rows(rows, group_by)
    tables = "\n".join(_table(t, g, group_by, i) for i, (t, g) in enumerate(groups.items()))
    ranking = _ranking_html(checks)[0]
    return (
        f'<div class="tlbench-report">\n<style>\n{_scoped_style(".tlbench-report")}\n</style>\n'
        f'{tables}\n<p class="legend">{_e(legend(pareto_by))}</p>\n{ranking}</div>\n'
    )


def write_html_report(
    path: str | os.PathLike[str],
    rows: list[Row],
    records: list[dict[str, Any]],
    *,
    sources: Iterable[str | os.PathLike[str]] = (),
    group_by: str = "dataset",
    checks: list[Any] | None = None,
    figure_note: str | None = None,
    pareto_by: str = "train",
) -> Path:
    """Write the page to `path` (atomically) and return it; the figure when matplotlib is
    installed, a note in its place otherwise. `figure_note`: no figure (drawing it costs
    seconds), this note in its place."""
    from tlbench.results import write_text_atomic

    path = Path(path)
    figure = figure_data_uri(rows, records) if figure_note is None else None
    text = render_page(
        rows,
        records,
        sources=sources,
        group_by=group_by,
        figure=figure,
        figure_note=figure_note or NO_MATPLOTLIB,
        checks=checks,
        pareto_by=pareto_by,
    )
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise TlbenchError(
            f"cannot write the page to {path}: {exc.strerror or exc}. Choose another --html."
        ) from None
    return path
