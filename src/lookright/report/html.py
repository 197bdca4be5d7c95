"""``report.html``: one self-contained page (inline CSS, images as base64 data URIs).

No external resource and no JavaScript. Element ids a reader (or a test) can rely on:
sections ``answers``, ``saliency``, ``faithfulness-curves``, ``grpo-rewards``, ``gallery``;
tables ``answers-table`` and ``saliency-table`` (class ``report-table``; each ``<td>`` has
``data-column`` = the Parquet column, class ``best`` on the best value per model);
``gallery-<model>`` (class ``gallery``, one ``<tr>`` per sample in ``<tbody>``);
plots are ``<img class="plot">``, gallery cells ``<img class="overlay">``; a section without
material has ``<p class="not-available">``.
"""

from __future__ import annotations

import base64
import re
from html import escape

import pyarrow as pa

from lookright.report.content import ANSWERS_NOTE, SALIENCY_NOTE, ReportContent
from lookright.report.gallery import Gallery
from lookright.report.plots import Plot
from lookright.report.tables import best_cells, display_columns, format_value, label

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { margin-bottom: 0.2em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; background: #eef7ee; }
div.scroll { overflow-x: auto; }
.not-available { color: #a33; font-style: italic; }
.note { color: #555; font-size: 0.85em; max-width: 60em; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
img.plot { max-width: 100%; border: 1px solid #ddd; }
table.gallery td { text-align: center; vertical-align: top; font-size: 0.8em; }
table.gallery th.sample { text-align: left; max-width: 14em; font-weight: normal; }
""".strip()

SECTIONS = (
    ("answers", "Answers: VQA, POPE, CHAIR, latency"),
    ("saliency", "Saliency: alignment, human agreement, faithfulness"),
    ("faithfulness-curves", "Deletion / insertion curves"),
    ("grpo-rewards", "GRPO reward curves"),
    ("gallery", "Saliency gallery"),
)


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def slug(text: str) -> str:
    """An id-safe form of ``text`` (letters, digits, ``-`` and ``_``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def _not_available(reason: str) -> str:
    return f'<p class="not-available">Not available: {escape(reason)}</p>'


def _cell(value: object, column: str, best: bool) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    classes = " ".join(c for c in ("num" if numeric else "", "best" if best else "") if c)
    attr = f' class="{classes}"' if classes else ""
    return f'<td{attr} data-column="{escape(column)}">{escape(format_value(value))}</td>'


def html_table(table: pa.Table, table_id: str) -> str:
    """A ``<table>`` of the display columns with ``data-column`` cells and best values marked."""
    columns = display_columns(table)
    best = best_cells(table)
    head = "".join(
        f'<th scope="col" data-column="{escape(c)}">{escape(label(c))}</th>' for c in columns
    )
    body = "\n".join(
        "<tr>" + "".join(_cell(row[c], c, (i, c) in best) for c in columns) + "</tr>"
        for i, row in enumerate(table.to_pylist())
    )
    return (
        f'<div class="scroll"><table id="{table_id}" class="report-table">\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table></div>"
    )


def _figures(plots: list[Plot]) -> str:
    return "\n".join(
        f'<figure><img class="plot" alt="{escape(p.title)}" src="{data_uri(p.path.read_bytes())}">'
        f"<figcaption>{escape(p.title)}</figcaption></figure>"
        for p in plots
    )


def gallery_table(gallery: Gallery, table_id: str) -> str:
    """One gallery as a ``<table>``: a column per (source, method), a row per sample."""
    head = "".join(
        f'<th scope="col">{escape(source)}<br>{escape(method)}</th>'
        for source, method in gallery.columns
    )
    rows = []
    for row in gallery.rows:
        title = escape(row.sample_id) + (
            f"<br><small>{escape(row.question)}</small>" if row.question else ""
        )
        cells = []
        for (source, method), cell in zip(gallery.columns, row.cells, strict=True):
            if cell is None:
                cells.append('<td class="missing">no map row</td>')
                continue
            alt = escape(f"{row.sample_id} {source} {method}")
            cells.append(
                f'<td><img class="overlay" alt="{alt}" src="{data_uri(cell.png)}">'
                f"<br>{escape(cell.caption)}</td>"
            )
        rows.append(f'<tr><th scope="row" class="sample">{title}</th>{"".join(cells)}</tr>')
    return (
        f'<h3>{escape(gallery.model)}</h3>\n<div class="scroll">'
        f'<table id="{table_id}" class="gallery">\n'
        f"<thead><tr><th>sample</th>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody>\n</table></div>"
    )


def _galleries(galleries: list[Gallery]) -> str:
    parts, used = [], set()
    for gallery in galleries:
        table_id = f"gallery-{slug(gallery.model)}"
        while table_id in used:
            table_id += "-2"
        used.add(table_id)
        parts.append(gallery_table(gallery, table_id))
        parts += [f'<p class="note">{escape(note)}</p>' for note in gallery.notes]
    return "\n".join(parts)


def _bodies(content: ReportContent) -> dict[str, str]:
    def table_or(table: pa.Table | None, table_id: str, note: str, missing: str) -> str:
        if table is None:
            return _not_available(missing)
        return html_table(table, table_id) + f'\n<p class="note">{escape(note)}</p>'

    return {
        "answers": table_or(
            content.answers, "answers-table", ANSWERS_NOTE, content.answers_missing
        ),
        "saliency": table_or(
            content.saliency, "saliency-table", SALIENCY_NOTE, content.saliency_missing
        ),
        "faithfulness-curves": _figures(content.curve_plots)
        or _not_available(content.curves_missing),
        "grpo-rewards": _figures(content.reward_plots) or _not_available(content.rewards_missing),
        "gallery": _galleries(content.galleries) or _not_available(content.gallery_missing),
    }


def render_html(content: ReportContent) -> str:
    """The whole page."""
    bodies = _bodies(content)
    nav = " ".join(f'<a href="#{sid}">{escape(title)}</a>' for sid, title in SECTIONS)
    sections = "\n".join(
        f'<section id="{sid}">\n<h2>{escape(title)}</h2>\n{bodies[sid]}\n</section>'
        for sid, title in SECTIONS
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in content.notes)
    notes_html = f'<section id="notes"><h2>Notes</h2><ul>{notes}</ul></section>' if notes else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>lookright report</title>\n"
        f"<style>\n{STYLE}\n</style>\n</head>\n<body>\n<h1>lookright report</h1>\n"
        f'<p class="note">Evaluation outputs: {escape(str(content.eval_dir))}</p>\n'
        f"<nav>{nav}</nav>\n{sections}\n{notes_html}\n</body>\n</html>\n"
    )
