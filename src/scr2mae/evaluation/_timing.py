"""Timing of training runs."""

from __future__ import annotations

import statistics
import time

import lightning.pytorch as pl

__all__ = ["EpochTimer"]


class EpochTimer(pl.Callback):
    """Lightning callback recording the wall-clock duration of every training epoch.

    Pass it to ``model.train(callbacks=[timer])``; :attr:`durations` then holds one entry per
    epoch and :attr:`median` a summary robust to the slower first epoch.
    """

    def __init__(self):
        self.durations: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.durations.append(time.perf_counter() - self._start)

    @property
    def median(self) -> float:
        """Median epoch time in seconds, leaving out the first epoch when there are several."""
        if not self.durations:
            raise ValueError("no epoch has been timed yet.")
        times = self.durations[1:] if len(self.durations) > 1 else self.durations
        return statistics.median(times)
