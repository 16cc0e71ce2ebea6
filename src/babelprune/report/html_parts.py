"""Building blocks of the HTML report: escaped tables that sort by a click, figures, headings, the page shell.

Nothing here loads anything from a network: the style and the sorting
script are inline, and figures are PNG files in `figures/` beside the page,
referenced by relative paths. Every string that reaches the page passes
through `esc` (html.escape), so a label holding markup shows as text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Figure files are named after set names, run labels and titles: `slug` maps any of them to a safe name.
from babelprune.names import child_path, slug

FIGURES = "figures"
# Marks a page as written by `babelprune report`: --overwrite replaces only such folders.
GENERATOR = "babelprune report"


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, and the number it sorts by (None: sort by the text; NaN: sorts last)."""

    text: str
    sort: float | None = None
    note: str = ""  # shown after the text, muted (e.g. "n.s.")
    css: str = ""


def num(value: float | None, digits: int = 3, signed: bool = False) -> Cell:
    """A numeric cell; None shows '-' and sorts last."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Cell("-", float("nan"), css="num")
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return Cell(text, float(value), css="num")


def integer(value: float | None) -> Cell:
    if value is None:
        return Cell("-", float("nan"), css="num")
    return Cell(f"{value:,.0f}", float(value), css="num")


def marked(text: str, sort: float | None) -> Cell:
    """A cell from one of tables.py's formatted values: its ' n.s.' mark becomes a muted note after the text."""
    text = text.strip()
    if " n.s." in text:
        return Cell(text.replace(" n.s.", ""), sort, note="n.s.", css="num")
    return Cell(text, sort, css="num")


def _cell_html(cell: Cell | str | int | float) -> str:
    if not isinstance(cell, Cell):
        cell = Cell(str(cell))
    attributes = ""
    if cell.sort is not None:
        attributes += f' data-sort="{"" if math.isnan(cell.sort) else repr(cell.sort)}"'
    if cell.css:
        attributes += f' class="{esc(cell.css)}"'
    note = f' <span class="ns" title="the 95% interval contains 0: not resolved">{esc(cell.note)}</span>' if cell.note else ""
    return f"<td{attributes}>{esc(cell.text)}{note}</td>"


def table(header: Sequence[str], rows: Sequence[Sequence[Cell | str]], caption: str = "", name: str = "",
          sortable: bool = True) -> str:
    """An HTML table; with `sortable`, a click on a header sorts the rows by that column (numbers as numbers)."""
    classes = "sortable" if sortable else ""
    attributes = f' class="{classes}"' + (f' data-name="{esc(name)}"' if name else "")
    head = "".join(f'<th scope="col">{esc(title)}</th>' for title in header)
    body = "\n".join("<tr>" + "".join(_cell_html(cell) for cell in row) + "</tr>" for row in rows)
    caption_html = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<div class="table-wrap"><table{attributes}>{caption_html}<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody></table></div>")


def paragraph(text: str, css: str = "") -> str:
    attributes = f' class="{esc(css)}"' if css else ""
    return f"<p{attributes}>{esc(text)}</p>"


def link(href: str, text: str) -> str:
    """A paragraph holding one link; the address is percent-encoded (a relative path, never a script)."""
    from urllib.parse import quote

    return f'<p><a href="{esc(quote(href))}">{esc(text)}</a></p>'


def source(text: str) -> str:
    """The sentence that says where a section's numbers come from."""
    return f'<p class="source"><span>Source</span> {esc(text)}</p>'


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


@dataclass
class Page:
    """Collects headings (for the table of contents) and writes figures into `folder/figures`."""

    folder: Path
    toc: list[tuple[int, str, str]] = field(default_factory=list)  # (level, anchor, title)
    figures: list[str] = field(default_factory=list)  # relative paths, in order

    def heading(self, level: int, title: str) -> str:
        anchor = f"s{len(self.toc) + 1}-{slug(title)}"
        self.toc.append((level, anchor, title))
        return f'<h{level} id="{anchor}">{esc(title)}</h{level}>'

    def figure(self, draw: Callable[[Path], object], name: str, alt: str, caption: str) -> str:
        """Draw a PNG with `draw(path)` and return its <figure>, referenced relatively."""
        (self.folder / FIGURES).mkdir(exist_ok=True)
        file = f"{len(self.figures) + 1:02d}-{slug(name)}.png"
        relative = f"{FIGURES}/{file}"
        draw(child_path(self.folder / FIGURES, file, "figure file name"))
        self.figures.append(relative)
        return (f'<figure><img src="{esc(relative)}" alt="{esc(alt)}" loading="eager">'
                f"<figcaption>{esc(caption)}</figcaption></figure>")

    def contents(self) -> str:
        """The table of contents: level-2 headings, each with its level-3 ones nested."""
        sections: list[tuple[str, list[str]]] = []
        for level, anchor, title in self.toc:
            link = f'<a href="#{anchor}">{esc(title)}</a>'
            if level == 2 or not sections:
                sections.append((link, []))
            else:
                sections[-1][1].append(link)
        items = []
        for link, children in sections:
            nested = "<ol>" + "".join(f"<li>{child}</li>" for child in children) + "</ol>" if children else ""
            items.append(f"<li>{link}{nested}</li>")
        return "<ol>" + "".join(items) + "</ol>"


def document(title: str, subtitle: str, page: Page, body: str, footer: str) -> str:
    """The whole page: inline style and script, header, contents, sections."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="{GENERATOR}">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{esc(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<header><h1>{esc(title)}</h1><p class="subtitle">{esc(subtitle)}</p></header>
<div class="layout">
<nav class="toc" aria-label="Contents"><h2>Contents</h2>{page.contents()}</nav>
<main>
{body}
</main>
</div>
<footer>{esc(footer)}</footer>
<script>{SCRIPT}</script>
</body>
</html>
"""


STYLE = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #d9e2ec; --soft: #f5f7fa; --accent: #1b6ca8; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; font: 15px/1.55 system-ui, -apple-system, "Segoe UI",
  Roboto, "Helvetica Neue", Arial, sans-serif; }
header { padding: 28px 40px 18px; border-bottom: 1px solid var(--line); background: var(--soft); }
header h1 { margin: 0 0 4px; font-size: 26px; letter-spacing: -0.01em; }
.subtitle { margin: 0; color: var(--muted); }
.layout { display: grid; grid-template-columns: 250px minmax(0, 1fr); gap: 36px; padding: 0 40px; }
nav.toc { position: sticky; top: 0; align-self: start; max-height: 100vh; overflow-y: auto; padding: 20px 0;
  font-size: 13.5px; }
nav.toc h2 { font-size: 13px; text-transform: uppercase; letter-spacing: 0.06em; color: var(--muted); margin: 0 0 8px; }
nav.toc ol { list-style: none; padding-left: 0; margin: 0; }
nav.toc ol ol { padding-left: 14px; margin: 2px 0 6px; border-left: 2px solid var(--line); }
nav.toc li { margin: 3px 0; }
nav.toc a { color: var(--ink); text-decoration: none; }
nav.toc a:hover { color: var(--accent); text-decoration: underline; }
main { padding: 8px 0 40px; min-width: 0; max-width: 1150px; }
h2 { font-size: 21px; margin: 36px 0 10px; padding-bottom: 6px; border-bottom: 2px solid var(--line); }
h3 { font-size: 17px; margin: 28px 0 8px; }
h4 { font-size: 15px; margin: 20px 0 6px; color: var(--muted); }
p { margin: 8px 0; max-width: 80ch; }
p.source { font-size: 13px; color: var(--muted); }
p.source span { display: inline-block; font-size: 11px; font-weight: 600; text-transform: uppercase;
  letter-spacing: 0.05em; color: #fff; background: var(--muted); border-radius: 3px; padding: 0 5px; margin-right: 4px; }
p.empty { font-style: italic; color: var(--muted); }
.table-wrap { overflow-x: auto; margin: 10px 0 18px; }
table { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0 6px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
td.num { text-align: right; }
td.wrap { white-space: normal; max-width: 70ch; overflow-wrap: anywhere; }
p.lead { font-weight: 600; margin-top: 22px; }
td.error { white-space: normal; min-width: 32ch; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
thead th { position: sticky; top: 0; background: var(--soft); border-bottom: 2px solid var(--line); font-weight: 600; }
table.sortable thead th { cursor: pointer; user-select: none; }
table.sortable thead th::after { content: " \\2195"; color: #9aa5b1; font-size: 11px; }
table.sortable thead th[aria-sort="ascending"]::after { content: " \\2191"; color: var(--accent); }
table.sortable thead th[aria-sort="descending"]::after { content: " \\2193"; color: var(--accent); }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #eef4fa; }
.ns { color: var(--muted); font-size: 11.5px; border: 1px solid var(--line); border-radius: 3px; padding: 0 3px; }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 4px; max-width: 90ch; }
footer { padding: 18px 40px 30px; color: var(--muted); font-size: 12.5px; border-top: 1px solid var(--line); }
@media (max-width: 900px) { .layout { display: block; padding: 0 16px; } nav.toc { position: static; max-height: none; } }
"""

# Sorts a table.sortable by the clicked column: by data-sort numbers when the cells have them, else by
# text (numbers inside text compared as numbers); empty values go last either way.
SCRIPT = """
(function () {
  function keyOf(cell) {
    if (!cell) return null;
    var raw = cell.getAttribute("data-sort");
    if (raw !== null) return raw === "" ? null : Number(raw);
    var text = cell.textContent.trim();
    return text === "" || text === "-" ? null : text;
  }
  function sortBy(table, header, column) {
    var body = table.tBodies[0];
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = keyOf(a.cells[column]), y = keyOf(b.cells[column]);
      if (x === null || y === null) return (x === null) - (y === null);
      var order = (typeof x === "number" && typeof y === "number") ? x - y
        : String(x).localeCompare(String(y), undefined, {numeric: true, sensitivity: "base"});
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.tabIndex = 0;
      header.title = "Sort by this column";
      header.addEventListener("click", function () { sortBy(table, header, column); });
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortBy(table, header, column); }
      });
    });
  });
})();
"""
