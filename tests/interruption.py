"""Kill a training stage mid-run, as Ctrl-C or a scheduler would (the resume tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from lookright.train import common as train_common


class _InterruptAfterStep2(train_common.MlflowStepLogger):
    """Ctrl-C arriving right after checkpoint-2 was written."""

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise KeyboardInterrupt
        return super().on_save(args, state, control, **kwargs)


@contextmanager
def interrupted_after_step_2() -> Iterator[None]:
    """Inside: every training stage raises KeyboardInterrupt after saving checkpoint-2
    (the stages take their step logger from :mod:`lookright.train.common` when they run)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_common, "MlflowStepLogger", _InterruptAfterStep2)
        with pytest.raises(KeyboardInterrupt):
            yield
