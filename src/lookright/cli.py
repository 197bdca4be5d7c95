"""``lookright``: one subcommand per pipeline stage, plus ``explain`` and ``tracking-init``.

Rules in ``rules/*.smk`` call these; each reads its stage's config (JSON from the rule, or
YAML files, merged over typed defaults), reads/writes Parquet, and logs one MLflow run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lookright.config import ConfigError, GateError
from lookright.data.validate import TooManyRejected


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def _stage_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text)
    parser.add_argument(
        "--config-json",
        action="append",
        default=[],
        metavar="JSON",
        help="stage config as JSON (repeatable; later ones win)",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="YAML",
        type=Path,
        help="stage config YAML file(s), merged before --config-json",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder of the stage")
    parser.add_argument(
        "--results-dir",
        default=Path("results"),
        type=Path,
        help="results root (holds the default MLflow store, results/mlflow.db)",
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="extra MLflow tag (e.g. snakemake.rule=sft); repeatable",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="extra MLflow param (e.g. reward_set=acc+fmt) to line ablations up; repeatable",
    )
    parser.add_argument("--fail-for-test", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--upstream",
        action="append",
        default=[],
        type=_key_value,
        metavar="STAGE=RUN_JSON",
        help="an upstream stage's run.json, recorded as a tag; repeatable",
    )
    return parser


def _load(schema, args):
    from lookright.config import load_stage_config

    return load_stage_config(schema, *args.config, *args.config_json)


def cmd_prepare_data(args) -> int:
    from lookright.config import PrepareDataConfig
    from lookright.data.prepare import prepare
    from lookright.data.validate import TooManyRejected
    from lookright.stage import fail_if_asked, stage_execution

    cfg = _load(PrepareDataConfig, args)
    with stage_execution(
        "prepare_data", cfg, out_dir=args.out, results_dir=args.results_dir, tags=dict(args.tag)
    ) as run:
        fail_if_asked(args, "prepare_data")
        try:
            summary = prepare(cfg.data, args.out, seed=cfg.seed, keep_rejected=args.keep_rejected)
        except TooManyRejected as error:  # the run ends FAILED, with the rows as an artifact
            run.log_artifact(Path(error.rejected_path))
            raise TooManyRejected(
                f"{error} They are also an artifact (rejected.parquet) of the FAILED MLflow "
                f"run {run.run_id}.",
                rejected_path=error.rejected_path,
            ) from None
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, int | float)})
        for name in ("summary.json", "rejected.parquet"):
            run.log_artifact(Path(args.out) / name)
    print(
        f"prepare_data: {summary['n_images']} images, {summary['n_samples']} samples, "
        f"{summary['n_rejected']} rejected -> {args.out}"
    )
    return 0


def _run_training_stage(stage: str, args, schema, train) -> dict:
    """Shared body of ``pretrain`` and ``sft``: config, resumable MLflow run, artifacts."""
    from lookright.stage import data_inputs, fail_if_asked, stage_execution

    cfg = _load(schema, args)
    out = Path(args.out)
    with stage_execution(
        stage,
        cfg,
        out_dir=out,
        results_dir=args.results_dir,
        tags=dict(args.tag),
        upstream=dict(args.upstream),
        resume=True,
        inputs=data_inputs(args.data),
    ) as run:
        fail_if_asked(args, stage)
        metrics = train(cfg, run)
        run.log_artifact(out / "metrics.json")
        run.log_artifact(out / "val_predictions.parquet")
        run.set_tags({"lookright.checkpoint": str((out / "model").resolve())})
    return metrics


def cmd_pretrain(args) -> int:
    from lookright.config import PretrainConfig
    from lookright.train.pretrain import run_pretrain

    metrics = _run_training_stage(
        "pretrain",
        args,
        PretrainConfig,
        lambda cfg, run: run_pretrain(cfg, args.data, args.out, run),
    )
    print(f"pretrain: held-out VQA accuracy {metrics['val_vqa_accuracy']:.3f} -> {args.out}/model")
    return 0


def cmd_sft(args) -> int:
    from lookright.config import SftConfig
    from lookright.train.sft import run_sft

    metrics = _run_training_stage(
        "sft", args, SftConfig, lambda cfg, run: run_sft(cfg, args.base, args.data, args.out, run)
    )
    if not metrics:  # a rank other than 0 of a multi-process launch: rank 0 reports
        return 0
    print(
        f"sft: held-out VQA accuracy {metrics['val_vqa_accuracy']:.3f}, "
        f"format rate {metrics['val_format_rate']:.3f} -> {args.out}/model"
    )
    return 0


def cmd_tracking_init(args) -> int:
    from lookright import tracking

    uri = tracking.resolve_tracking_uri(args.tracking_uri, args.results_dir)
    tracking.init_store(uri, args.experiment)
    print(f"MLflow store ready: {uri} (experiment {args.experiment!r})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookright", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    prep = _stage_parser(sub, "prepare-data", "build the images/samples/rejected tables")
    prep.add_argument(
        "--keep-rejected",
        type=Path,
        default=None,
        metavar="PARQUET",
        help="where to copy rejected.parquet when too many rows are rejected: a path outside "
        "the stage's outputs, which a failed Snakemake job deletes",
    )
    prep.set_defaults(func=cmd_prepare_data)

    pre = _stage_parser(sub, "pretrain", "train a tiny base VLM from scratch")
    pre.add_argument("--data", required=True, type=Path, help="prepare_data output folder")
    pre.set_defaults(func=cmd_pretrain)

    sft = _stage_parser(sub, "sft", "supervised fine-tuning on the CoT format")
    sft.add_argument("--data", required=True, type=Path, help="prepare_data output folder")
    sft.add_argument("--base", required=True, help="base checkpoint folder or hub id")
    sft.set_defaults(func=cmd_sft)

    from lookright.train.grpo import add_grpo_arguments, grpo_main

    grpo = _stage_parser(sub, "grpo", "GRPO with saliency / region-attention rewards")
    add_grpo_arguments(grpo)
    grpo.set_defaults(func=grpo_main)

    from lookright.decoding.stage import add_decode_arguments, decode_main

    decode = _stage_parser(sub, "decode", "decode POPE/caption prompts with one strategy")
    add_decode_arguments(decode)
    decode.set_defaults(func=decode_main)

    from lookright.eval.saliency_stage import (
        add_evaluate_saliency_arguments,
        evaluate_saliency_main,
    )

    saliency = _stage_parser(
        sub,
        "evaluate-saliency",
        "accuracy, saliency maps, alignment, human alignment, faithfulness",
    )
    add_evaluate_saliency_arguments(saliency)
    saliency.set_defaults(func=evaluate_saliency_main)

    from lookright.eval.answers_stage import add_evaluate_answers_arguments, evaluate_answers_main

    answers = _stage_parser(sub, "evaluate-answers", "POPE, CHAIR and latency of decoded answers")
    add_evaluate_answers_arguments(answers)
    answers.set_defaults(func=evaluate_answers_main)

    from lookright.report.stage import add_report_arguments, report_main

    report = _stage_parser(
        sub, "report", "tables, plots, gallery and report.html of every evaluation"
    )
    add_report_arguments(report)
    report.set_defaults(func=report_main)

    from lookright.report.experiment import add_experiment_arguments, experiment_main

    summary = sub.add_parser(
        "experiment-summary", help="mean, std, bootstrap CI and paired effects over seeds"
    )
    add_experiment_arguments(summary)
    summary.set_defaults(func=experiment_main)

    init = sub.add_parser("tracking-init", help="create/migrate the MLflow store once")
    init.add_argument("--results-dir", default=Path("results"), type=Path)
    init.add_argument("--tracking-uri", default=None)
    init.add_argument("--experiment", default=os.environ.get("MLFLOW_EXPERIMENT_NAME", "lookright"))
    init.set_defaults(func=cmd_tracking_init)

    from lookright.saliency.explain import add_explain_arguments, explain_main

    explain = sub.add_parser("explain", help="saliency maps for one image + question")
    add_explain_arguments(explain)
    explain.set_defaults(func=explain_main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from lookright.versions import print_problems

    if not print_problems():  # untested versions warn, known-broken ones stop here
        return 2
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError) as error:
        print(f"lookright {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (GateError, TooManyRejected) as error:  # the MLflow run is marked FAILED
        print(f"lookright {args.command}: failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
