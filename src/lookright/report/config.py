"""Options of the report (config key ``report``), read by the gallery and the plots.

The ``report`` stage's config (:class:`lookright.stages.report.ReportConfig`) holds this
section; its ranges are checked there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReportSection:
    gallery_samples: int = 4  # samples (rows) of the saliency gallery; 0 = no gallery
    gallery_methods: list[str] | None = None  # columns per source; None = every method found
    smooth_window: int = 5  # trailing moving average (steps) of the GRPO reward curves; 1 = raw
