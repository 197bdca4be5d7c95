"""The pipeline's stages, one module each, and the command registry of the ``lookright`` CLI.

Every stage module defines its config dataclass, its CLI arguments and its run function on
:class:`lookright.stages.base.Stage` (the shared sequence: config, MLflow run, artifacts,
``run.json``, summary line), and glues library packages together (data, models, saliency,
rewards, decoding, train, metrics, report); the library packages never import a stage.

``COMMANDS`` maps each ``lookright`` subcommand to the module that implements it and a
one-line help, so ``lookright --help`` and argument parsing import nothing heavy: a command's
module is imported only when that command runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Command:
    """A ``lookright`` subcommand: a stage (``STAGE`` of ``module``) or a tool."""

    module: str
    help: str
    stage: bool = True


COMMANDS: dict[str, Command] = {
    "prepare-data": Command(
        "lookright.stages.prepare_data", "build the images/samples/rejected tables"
    ),
    "pretrain": Command("lookright.stages.pretrain", "train a tiny base VLM from scratch"),
    "sft": Command("lookright.stages.sft", "supervised fine-tuning on the CoT format"),
    "grpo": Command("lookright.stages.grpo", "GRPO with saliency / region-attention rewards"),
    "decode": Command("lookright.stages.decode", "decode POPE/caption prompts with one strategy"),
    "evaluate-saliency": Command(
        "lookright.stages.evaluate_saliency",
        "accuracy, saliency maps, alignment, human alignment, faithfulness",
    ),
    "evaluate-answers": Command(
        "lookright.stages.evaluate_answers", "POPE, CHAIR and latency of decoded answers"
    ),
    "report": Command(
        "lookright.stages.report", "tables, plots, gallery and report.html of every evaluation"
    ),
    "explain": Command(
        "lookright.saliency.explain", "saliency maps for one image + question", stage=False
    ),
    "experiment-summary": Command(
        "lookright.report.experiment",
        "mean, std, bootstrap CI and paired effects over seeds",
        stage=False,
    ),
    "tracking-init": Command(
        "lookright.tracking", "create/migrate the MLflow store once", stage=False
    ),
}
STAGE_COMMANDS = {c.module.rsplit(".", 1)[1]: name for name, c in COMMANDS.items() if c.stage}
"""Stage name (MLflow tag, Snakemake rule) -> CLI command, e.g. ``evaluate_saliency``."""


def load_stage(name: str) -> Any:
    """The :class:`~lookright.stages.base.Stage` object of a stage name or command."""
    command = STAGE_COMMANDS.get(name, name)
    if command not in COMMANDS or not COMMANDS[command].stage:
        raise ValueError(f"unknown stage {name!r}; stages: {sorted(STAGE_COMMANDS)}")
    return importlib.import_module(COMMANDS[command].module).STAGE
