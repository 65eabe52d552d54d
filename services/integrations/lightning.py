"""Record a PyTorch Lightning ``Trainer.fit`` with netlapse: every parameter after every optimizer step.

    import lightning.pytorch as L
    from netlapse.integrations.lightning import NetlapseCallback

    trainer = L.Trainer(max_epochs=3, callbacks=[NetlapseCallback(name="resnet")])
    trainer.fit(model, train_loader, val_loader)

The callback starts a run (``netlapse.init``; server ``$NETLAPSE_URL``, or ``dir=`` for offline) when fitting
starts, watches the LightningModule and its optimizer right before the first training batch (step 0), so
steps are optimizer steps — gradient accumulation gives one step per real update, and a step that AMP's
scaler skips is not one. It logs the metrics the module logs (``self.log``) and the training loss, and
finishes the run when fitting ends: ``succeeded``, ``cancelled`` on Ctrl-C, ``failed`` with the exception's
text otherwise. The first batch's inputs serve as ``example_input`` (the model exported with torch.export for
activations) unless you pass one, or ``example_input=False`` to skip the export.

Works with ``lightning.pytorch`` and with the older ``pytorch_lightning`` package.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

try:
    import lightning.pytorch as _lightning
except ImportError:  # only the older package
    _lightning = None  # type: ignore[assignment]
try:
    import pytorch_lightning as _pytorch_lightning
except ImportError:
    _pytorch_lightning = None  # type: ignore[assignment]
if _lightning is None and _pytorch_lightning is None:
    raise ImportError(
        "netlapse.integrations.lightning needs PyTorch Lightning: pip install 'netlapse[lightning]'"
    )

__all__ = ["NetlapseCallback"]

# A Trainer accepts only callbacks of its own package; with both installed, the callback is both.
_BASES = tuple(m.Callback for m in (_lightning, _pytorch_lightning) if m is not None)


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                continue
            v = v.item()
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


def _first_tensor(batch: Any) -> torch.Tensor | None:
    """The model's input in a batch: the batch itself, or the first element of a tuple / list batch."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    return None


class NetlapseCallback(*_BASES):  # type: ignore[misc]
    """Records ``Trainer.fit`` as a netlapse run (see the module's docstring).

    ``name`` / ``config`` / ``server`` / ``token`` / ``dir`` go to ``netlapse.init`` (the config defaults to
    the module's hyperparameters); ``every`` / ``buffers`` / ``example_input`` to ``run.watch``. Pass ``run``
    to record into a run you started yourself (it is then left open for you to finish)."""

    def __init__(
        self,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        *,
        server: str | None = None,
        token: str | None = None,
        dir: str | None = None,
        every: int = 1,
        buffers: bool = False,
        example_input: Any = None,
        run: Any = None,
    ) -> None:
        super().__init__()
        self.name, self.config = name, dict(config or {})
        self.server, self.token, self.dir = server, token, dir
        self.every, self.buffers, self.example_input = every, buffers, example_input
        self.run = run
        self._own_run = run is None
        self._watching = False

    # -- the run

    def _active(self, trainer: Any) -> bool:
        return bool(trainer.is_global_zero) and self.run is not None and not self.run.finished

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero or self.run is not None:
            return
        import netlapse

        config = {**_scalars_or_str(getattr(pl_module, "hparams", {}) or {}), **self.config}
        self.run = netlapse.init(
            name=self.name or type(pl_module).__name__,
            config=config,
            server=self.server,
            token=self.token,
            dir=self.dir,
        )
        self._own_run = True

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._watching or not self._active(trainer):
            return
        optimizers = list(trainer.optimizers)
        if not optimizers:
            raise RuntimeError("netlapse: the LightningModule has no optimizer to watch")
        if len(optimizers) > 1:
            warnings.warn(
                f"netlapse: {len(optimizers)} optimizers; steps count the first one's steps",
                RuntimeWarning,
                stacklevel=2,
            )
        example = self.example_input
        if example is None:
            example = _first_tensor(batch)
        elif example is False:
            example = None
        self.run.watch(
            pl_module, optimizers[0], every=self.every, example_input=example, buffers=self.buffers
        )
        self._watching = True

    # -- metrics

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._active(trainer):
            return
        metrics = _scalars(trainer.callback_metrics)
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if "loss" not in metrics and isinstance(loss, torch.Tensor) and loss.numel() == 1:
            metrics["loss"] = float(loss.detach().item())
        if metrics:
            self.run.log(metrics)

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not self._active(trainer):
            return
        metrics = _scalars(trainer.callback_metrics)
        if metrics:
            self.run.log(metrics)

    # -- the end

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self._own_run and self._active(trainer):
            self.run.finish()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if not self._own_run or not self._active(trainer):
            return
        if isinstance(exception, KeyboardInterrupt):
            self.run.finish(status="cancelled", error="interrupted (KeyboardInterrupt)")
        else:
            self.run.finish(status="failed", error=f"{type(exception).__name__}: {exception}"[:4000])


def _scalars_or_str(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters as a JSON-able config: numbers, strings and booleans kept, anything else as text."""
    out: dict[str, Any] = {}
    for k, v in dict(hparams).items():
        out[str(k)] = v if isinstance(v, bool | int | float | str) or v is None else str(v)
    return out
