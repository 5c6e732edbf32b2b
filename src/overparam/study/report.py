"""The study report: sections of readings, figures and tables, written as report.md and report.html.

Plain data in, files out. Figures are saved as PNG (shown) and SVG (for papers); tables as CSV.
"""

from __future__ import annotations

import csv
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import plots



@dataclass
class Figure:
    stem: str  # file name without suffix, under figures/
    caption: str


@dataclass
class Table:
    stem: str  # file name without suffix, under tables/
    caption: str
    columns: list[str]
    rows: list[list]


@dataclass
class Fact:
    """One cell of the summary table (the report's Table 1): `quantity` measured for `activation`, with its
    interval [low, high] where it has one; `section` is filled in by the runner (the cell links to it)."""

    activation: str
    quantity: str
    value: float | str
    low: float = float("nan")
    high: float = float("nan")
    section: str = ""

    @property
    def text(self) -> str:
        shown = _cell(self.value)
        if isinstance(self.low, float) and self.low == self.low:
            shown += f" [{_cell(self.low)}, {_cell(self.high)}]"
        return shown


SUMMARY = Table("summary", "Summary: one row per activation, each cell from the section it links to", [], [])


def summary_table(facts: list[Fact]) -> Table:
    """tables/summary.csv in long form: activation, quantity, value, low, high, section."""
    return Table(SUMMARY.stem, SUMMARY.caption, ["activation", "quantity", "value", "low", "high", "section"],
                 [[f.activation, f.quantity, f.value, f.low, f.high, f.section] for f in facts])


def _wide(facts: list[Fact]) -> tuple[list[str], list[str], dict]:
    """Activations (rows), quantities (columns) in order of first appearance, and {(activation, quantity): fact}."""
    activations = list(dict.fromkeys(f.activation for f in facts))
    quantities = list(dict.fromkeys(f.quantity for f in facts))
    return activations, quantities, {(f.activation, f.quantity): f for f in facts}


@dataclass
class Section:
    """One experiment of the study. status: complete | partial | not run | failed."""

    key: str
    title: str
    status: str = "not run"
    reading: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    command: str = ""
    config: str = ""  # the TOML that re-runs this section (its table and [study])
    note: str = ""
    device: str = ""  # where its units were computed, e.g. "cpu" or "cuda (NVIDIA H100 80GB HBM3)"
    facts: list[Fact] = field(default_factory=list)


def save_figure(fig, out: Path, stem: str) -> None:
    """Write figures/<stem>.png and figures/<stem>.svg (each replaced atomically) and close the figure."""
    folder = Path(out) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    plots.save(fig, folder / f"{stem}.png", dpi=110, close=False)
    plots.save(fig, folder / f"{stem}.svg")


def _temporary(path: Path) -> Path:
    """A temporary name beside `path`, unique to this process (two studies may write one folder)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_table(table: Table, out: Path) -> Path:
    folder = Path(out) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{table.stem}.csv"
    temporary = _temporary(path)
    with open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(table.columns)
        writer.writerows(table.rows)
    temporary.replace(path)
    return path


def _cell(value) -> str:
    if isinstance(value, float):
        if value != value:
            return "–"
        return f"{value:.4g}"
    return str(value)


def _atomic_write(path: Path, text: str) -> None:
    temporary = _temporary(path)
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def write_markdown(sections: list[Section], meta: dict, out: Path) -> Path:
    lines = [f"# {meta['title']}", "", meta["summary"], ""]
    facts = [f for s in sections for f in s.facts]
    if facts:
        activations, quantities, cells = _wide(facts)
        lines += [f"**{SUMMARY.caption}** ([CSV](tables/{SUMMARY.stem}.csv))", "",
                  "| activation | " + " | ".join(quantities) + " |", "|" + "---|" * (len(quantities) + 1)]
        lines += ["| " + a + " | " + " | ".join(f"[{cells[a, q].text}](#{cells[a, q].section})" if (a, q) in cells
                                                 else "–" for q in quantities) + " |" for a in activations]
        lines.append("")
    if meta.get("key_figure"):
        lines += [f"![key figure](figures/{meta['key_figure']}.png)", ""]
    for section in sections:
        lines += [f"## {section.title}", "", f"*Status: {section.status}*" + (f" — {section.note}" if section.note else "")
                  + (f" (computed on {section.device})" if section.device else ""), ""]
        for paragraph in section.reading:
            lines += [paragraph, ""]
        for figure in section.figures:
            lines += [f"![{figure.caption}](figures/{figure.stem}.png)", "", f"*{figure.caption}* "
                      f"([SVG](figures/{figure.stem}.svg))", ""]
        for table in section.tables:
            lines += [f"**{table.caption}** ([CSV](tables/{table.stem}.csv))", "",
                      "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
            lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.rows]
            lines.append("")
        if section.command:
            lines += ["Re-run this section:", "", "```bash", section.command, "```", "",
                      "<details><summary>configuration (TOML, for --config)</summary>", "", "```toml",
                      section.config.rstrip(), "```", "", "</details>", ""]
    lines += ["---", meta["footer"], ""]
    path = Path(out) / "report.md"
    _atomic_write(path, "\n".join(lines))
    return path


_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1d1d1f; line-height: 1.5; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { margin-top: 2.2em; border-bottom: 1px solid #eee; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: .88em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f5f5f7; } td:first-child, th:first-child { text-align: left; }
pre { background: #f5f5f7; padding: .8em; overflow-x: auto; font-size: .85em; }
.status { font-size: .85em; color: #555; } .status.partial, .status.failed, .status.not-run { color: #b00; }
nav ul { columns: 2; }
"""


def write_html(sections: list[Section], meta: dict, out: Path) -> Path:
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{esc(meta['title'])}</title>", f"<style>{_STYLE}</style></head><body>",
             f"<h1>{esc(meta['title'])}</h1>", f"<p>{esc(meta['summary'])}</p>"]
    facts = [f for s in sections for f in s.facts]
    if facts:
        activations, quantities, cells = _wide(facts)
        head = "<th>activation</th>" + "".join(f"<th>{esc(q)}</th>" for q in quantities)
        body = "".join("<tr><td>" + esc(a) + "</td>" + "".join(
            f'<td><a href="#{cells[a, q].section}">{esc(cells[a, q].text)}</a></td>' if (a, q) in cells else "<td>–</td>"
            for q in quantities) + "</tr>" for a in activations)
        parts.append(f'<p><strong>{esc(SUMMARY.caption)}</strong> (<a href="tables/{SUMMARY.stem}.csv">CSV</a>)</p>'
                     f'<table id="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    if meta.get("key_figure"):
        parts.append(f'<figure><img src="figures/{meta["key_figure"]}.png" alt="key figure">'
                     f"<figcaption>{esc(meta.get('key_caption', ''))}</figcaption></figure>")
    parts.append("<nav><ul>" + "".join(f'<li><a href="#{s.key}">{esc(s.title)}</a> '
                                       f'<span class="status">({esc(s.status)})</span></li>' for s in sections)
                 + "</ul></nav>")
    for section in sections:
        status_class = section.status.replace(" ", "-")
        parts.append(f'<section id="{section.key}"><h2>{esc(section.title)}</h2>')
        parts.append(f'<p class="status {status_class}">Status: {esc(section.status)}'
                     + (f" — {esc(section.note)}" if section.note else "")
                     + (f" (computed on {esc(section.device)})" if section.device else "") + "</p>")
        parts += [f"<p>{esc(paragraph)}</p>" for paragraph in section.reading]
        for figure in section.figures:
            parts.append(f'<figure><img src="figures/{figure.stem}.png" alt="{esc(figure.caption)}">'
                         f'<figcaption>{esc(figure.caption)} (<a href="figures/{figure.stem}.svg">SVG</a>)'
                         "</figcaption></figure>")
        for table in section.tables:
            head = "".join(f"<th>{esc(c)}</th>" for c in table.columns)
            body = "".join("<tr>" + "".join(f"<td>{esc(_cell(v))}</td>" for v in row) + "</tr>" for row in table.rows)
            parts.append(f'<p><strong>{esc(table.caption)}</strong> (<a href="tables/{table.stem}.csv">CSV</a>)</p>'
                         f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        if section.command:
            parts.append(f"<p>Re-run this section:</p><pre>{esc(section.command)}</pre>"
                         f"<details><summary>configuration (TOML, for --config)</summary><pre>"
                         f"{esc(section.config)}</pre></details>")
        parts.append("</section>")
    parts.append(f"<hr><p class=\"status\">{esc(meta['footer'])}</p></body></html>")
    path = Path(out) / "report.html"
    _atomic_write(path, "\n".join(parts))
    return path


def write_report(sections: list[Section], meta: dict, out: Path) -> tuple[Path, Path]:
    """Write tables, report.md and report.html (each file replaced atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for section in sections:
        for table in section.tables:
            write_table(table, out)
    facts = [f for s in sections for f in s.facts]
    if facts:
        write_table(summary_table(facts), out)
    return write_markdown(sections, meta, out), write_html(sections, meta, out)
