"""Every GRPO rollout with its rewards, written step by step (``samples.parquet``), and TRL's
per-step completion tables (rewards and advantages) as MLflow table artifacts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from transformers import TrainerCallback

from lookright.rewards import RewardFunction, completion_text


class SampleRecorder:
    """Wraps the reward functions of a batch and writes every rollout with its rewards.

    TRL calls the reward functions one after the other on the same batch; when the last one
    has answered, the batch's rows (step, sample, prompt, completion, each reward, the
    weighted total) go to ``folder/step-NNNNNN-rankR.parquet``. A step replayed after a
    resume overwrites its file; :meth:`merge` writes the single ``samples.parquet`` (the
    per-step files stay, so a re-run that only redoes the evaluation still has them).
    """

    def __init__(self, names: list[str], weights: list[float], folder: str | Path) -> None:
        self.names, self.weights = names, weights
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rank = 0  # the process index under multi-GPU training (one file per process)
        self._pending: dict[str, list[float | None]] = {}
        self._context: dict[str, Any] | None = None

    def schema(self) -> pa.Schema:
        fields = [
            ("step", pa.int64()),
            ("sample_id", pa.string()),
            ("question", pa.string()),
            ("answer", pa.string()),
            ("completion", pa.string()),
            ("completion_tokens", pa.int64()),
            ("reward", pa.float64()),
        ]
        fields += [(f"reward_{n}", pa.float64()) for n in self.names]
        return pa.schema(fields)

    def wrap(self, function: RewardFunction) -> Callable:
        recorder, name = self, function.name

        def recorded(prompts, completions, completion_ids=None, **kwargs):
            values = function(prompts, completions, completion_ids, **kwargs)
            recorder._collect(name, values, prompts, completions, completion_ids, kwargs)
            return values

        recorded.__name__ = name
        return recorded

    def _collect(self, name, values, prompts, completions, completion_ids, kwargs) -> None:
        if not self._pending:
            n = len(completions)
            state = kwargs.get("trainer_state")
            self._context = {
                "step": int(state.global_step) if state is not None else 0,
                "sample_id": list(kwargs.get("sample_id") or [None] * n),
                "question": list(kwargs.get("question") or [None] * n),
                "answer": list(kwargs.get("answer") or [None] * n),
                "completion": [completion_text(c) for c in completions],
                "completion_tokens": [
                    len(c) if c is not None else None for c in (completion_ids or [None] * n)
                ],
            }
        self._pending[name] = list(values)
        if len(self._pending) == len(self.names):
            self._flush()

    def _flush(self) -> None:
        context = self._context or {}
        columns = dict(context)
        columns["step"] = [context["step"]] * len(context["completion"])
        totals = []
        for k in range(len(context["completion"])):
            parts = [
                w * self._pending[n][k]
                for n, w in zip(self.names, self.weights, strict=True)
                if self._pending[n][k] is not None
            ]
            totals.append(float(sum(parts)) if parts else None)
        columns["reward"] = totals
        for name in self.names:
            columns[f"reward_{name}"] = self._pending[name]
        table = pa.table(columns, schema=self.schema())
        name = f"step-{context['step']:06d}-rank{self.rank}.parquet"
        pq.write_table(table, self.folder / name)
        self._pending, self._context = {}, None

    def merge(self, path: str | Path) -> int:
        """Concatenate the per-step files into ``path``; returns the number of rows."""
        parts = sorted(self.folder.glob("step-*.parquet"))
        tables = [pq.read_table(p, schema=self.schema()) for p in parts]
        table = pa.concat_tables(tables) if tables else self.schema().empty_table()
        pq.write_table(table, path)
        return table.num_rows


class CompletionTables(TrainerCallback):
    """Log TRL's completion tables (``GRPOConfig.log_completions``: prompt, completion, each
    reward, advantage, per logging step) to the stage's MLflow run as table artifacts
    ``completions/step_NNNNN.json``, which the MLflow UI shows as tables.

    TRL writes a step's table after its log callbacks ran, so each log (and the end of
    training) logs every table not logged yet.
    """

    def __init__(self, run: Any, folder: str | Path) -> None:
        self.run = run
        self.folder = Path(folder)
        self.logged: set[str] = set()

    def _flush(self) -> None:
        for path in sorted(self.folder.glob("completions_*.parquet")):
            if path.name in self.logged:
                continue
            frame = pq.read_table(path).to_pandas()
            for column in ("prompt", "completion"):
                if column in frame:
                    frame[column] = frame[column].map(completion_text)
            step = path.stem.rsplit("_", 1)[-1]
            self.run.log_table(frame, f"completions/step_{step}.json")
            self.logged.add(path.name)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero:
            self._flush()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._flush()
