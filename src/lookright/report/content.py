"""What the report shows, section by section, and its Markdown rendering (``summary.md``).

Each section holds its material or the reason it is "not available"; :mod:`lookright.report.html`
renders the same content as a self-contained HTML page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from lookright.report.gallery import Gallery
from lookright.report.plots import Plot
from lookright.report.tables import markdown_table

ANSWERS_NOTE = (
    "POPE: the 'average' split. VQA accuracy comes from the saliency evaluation (greedy) and is "
    "repeated on every strategy's row unless that strategy measured its own. Best value per "
    "model in bold."
)
SALIENCY_NOTE = (
    "Alignment: share of the map in the evidence box(es). NSS / Spearman: agreement with human "
    "attention. Del k / Ins k: score (% of the original answer probability) after deleting / "
    "inserting the top k % patches: lower Del and higher Ins are more faithful. Best value per "
    "model in bold."
)


@dataclass
class ReportContent:
    """The assembled report; a ``*_missing`` text replaces a section that has no material."""

    eval_dir: Path
    answers: pa.Table | None
    saliency: pa.Table | None
    curve_plots: list[Plot]
    reward_plots: list[Plot]
    galleries: list[Gallery]
    answers_missing: str = ""
    saliency_missing: str = ""
    curves_missing: str = ""
    rewards_missing: str = ""
    gallery_missing: str = ""
    notes: list[str] = field(default_factory=list)


def _not_available(reason: str) -> str:
    return f"_Not available: {reason}_"


def _image_lines(plots: list[Plot], out_dir: Path) -> list[str]:
    """One Markdown image per paragraph, linked relative to ``out_dir``."""
    lines = []
    for plot in plots:
        lines += [f"![{plot.title}]({Path(os.path.relpath(plot.path, out_dir)).as_posix()})", ""]
    return lines[:-1]


def _section(title: str, body: list[str]) -> list[str]:
    return [f"## {title}", "", *body, ""]


def summary_markdown(content: ReportContent, out_dir: str | Path) -> str:
    """``summary.md``: both tables, links to the plots and gallery sheets, what is missing."""
    out_dir = Path(out_dir)
    lines = ["# lookright report", "", f"Evaluation outputs: `{content.eval_dir}`", ""]
    if content.answers is not None:
        body = [markdown_table(content.answers), "", ANSWERS_NOTE]
    else:
        body = [_not_available(content.answers_missing)]
    lines += _section("Answers: VQA, POPE, CHAIR, latency", body)
    if content.saliency is not None:
        body = [markdown_table(content.saliency), "", SALIENCY_NOTE]
    else:
        body = [_not_available(content.saliency_missing)]
    lines += _section("Saliency: alignment, human agreement, faithfulness", body)
    for title, plots, missing in (
        ("Deletion / insertion curves", content.curve_plots, content.curves_missing),
        ("GRPO reward curves", content.reward_plots, content.rewards_missing),
    ):
        lines += _section(title, _image_lines(plots, out_dir) or [_not_available(missing)])
    sheets = [Plot(f"Gallery: {g.model}", g.path) for g in content.galleries if g.path is not None]
    lines += _section(
        "Saliency gallery",
        _image_lines(sheets, out_dir) or [_not_available(content.gallery_missing)],
    )
    if content.notes:
        lines += _section("Notes", [f"- {note}" for note in content.notes])
    return "\n".join(lines).rstrip() + "\n"
