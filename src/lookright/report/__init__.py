"""The ``report`` stage: evaluation outputs of every model x source x strategy, summarised.

Modules: :mod:`~lookright.report.collect` (find and load the inputs),
:mod:`~lookright.report.tables` (answers and saliency tables), :mod:`~lookright.report.plots`
(deletion/insertion and GRPO reward curves), :mod:`~lookright.report.gallery` (saliency
overlays), :mod:`~lookright.report.content` (``summary.md``), :mod:`~lookright.report.html`
(``report.html``), :mod:`~lookright.stages.report` (the CLI entry point and
:func:`~lookright.stages.report.run_report`). Submodules are imported on use, so importing
this package stays light.
"""
