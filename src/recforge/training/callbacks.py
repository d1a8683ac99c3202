"""Per-epoch hooks of the fit loop (logging, Optuna pruning, custom stops) and its progress bar.

Every callback receives `on_epoch_end(epoch, logs)` with `logs`:
`epoch` (0-based), `epochs`, `loss`, `samples`, `seconds`, `samples_per_s`, `lr`,
`metrics` (the validation metrics of this epoch, possibly empty), `best_epoch`, `best_metric`.
Returning True stops training after this epoch; raising (e.g. `optuna.TrialPruned`) aborts it.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

from tqdm.auto import tqdm


@runtime_checkable
class Callback(Protocol):
    """Anything with `on_epoch_end(epoch, logs) -> bool | None`; True asks the loop to stop."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool | None: ...


class LoggingCallback:
    """Logs one line per epoch: loss, throughput, time, learning rate and validation metrics."""

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger("recforge.training")
        self.level = level

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool | None:
        """Log the epoch's summary; never stops training."""
        metrics = "".join(f"  {k} {v:.4f}" for k, v in logs.get("metrics", {}).items())
        self.logger.log(
            self.level,
            "epoch %d/%d  loss %.5f  %.0f samples/s  %.1f s  lr %.3g%s",
            epoch + 1,
            logs["epochs"],
            logs["loss"],
            logs["samples_per_s"],
            logs["seconds"],
            logs["lr"],
            metrics,
        )
        return None


class ProgressBar:
    """A tqdm bar per epoch counting samples, so its rate reads in samples/s."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self._bar: Any = None

    def start(self, epoch: int) -> None:
        """Open the bar of `epoch` (0-based)."""
        self._bar = tqdm(
            desc=f"epoch {epoch + 1}/{self.epochs}",
            unit="samples",
            unit_scale=True,
            dynamic_ncols=True,
            leave=True,
        )

    def update(self, samples: int, loss: float) -> None:
        """Advance by one batch of `samples`; the running loss is shown at tqdm's refresh rate."""
        self._bar.update(samples)
        self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def end(self, logs: dict[str, Any]) -> None:
        """Show the epoch's mean loss and validation metrics, then close the bar."""
        if self._bar is None:
            return
        shown = {"loss": f"{logs['loss']:.4f}"}
        shown.update({k: f"{v:.4f}" for k, v in logs.get("metrics", {}).items()})
        self._bar.set_postfix(shown, refresh=True)
        self.close()

    def close(self) -> None:
        """Close the bar if open (also on errors, so the terminal is left clean)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
