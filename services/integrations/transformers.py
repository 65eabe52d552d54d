"""Record a Hugging Face ``Trainer`` with netlapse: every parameter after every optimizer step.

    from transformers import Trainer
    from netlapse.integrations.transformers import NetlapseCallback

    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[NetlapseCallback(name="bert-ft")])
    trainer.train()

When training begins the callback starts a run (``netlapse.init``; server ``$NETLAPSE_URL``, or ``dir=`` for
offline) and watches the model and the optimizer underneath accelerate's wrapper, so steps are optimizer steps
(``state.global_step``): gradient accumulation gives one step per update, and a step that the AMP scaler skips
is not one. Whatever the Trainer logs (loss, learning rate, eval metrics) is logged at the current step, and
the run finishes ``succeeded`` when training ends. The Trainer has no error callback: use the callback as a
context manager around ``trainer.train()`` to mark the run ``failed`` with the exception's text (an uncaught
exception that ends the process is recorded as a failure by the SDK anyway).

    with NetlapseCallback(name="bert-ft") as cb:
        Trainer(..., callbacks=[cb]).train()

Pass ``example_input`` (a batch as the model takes it, e.g. ``{"input_ids": ...}``) to export the model with
torch.export for activations; many transformer models cannot be exported, which only warns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import torch

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "netlapse.integrations.transformers needs Hugging Face transformers: pip install 'netlapse[transformers]'"
    ) from exc

__all__ = ["NetlapseCallback"]


def _innermost(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer under accelerate's (or another library's) ``.optimizer`` wrappers."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"netlapse: cannot watch an optimizer of type {type(optimizer).__name__}")
    return optimizer


def _numbers(logs: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in logs.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[str(k)] = float(v)
    return out


class NetlapseCallback(TrainerCallback):
    """Records ``Trainer.train`` as a netlapse run (see the module's docstring).

    ``name`` (default ``args.run_name``) / ``config`` (default: the training arguments) / ``server`` /
    ``token`` / ``dir`` go to ``netlapse.init``; ``every`` / ``buffers`` / ``example_input`` to ``run.watch``.
    Pass ``run`` to record into a run you started yourself (it is then left open for you to finish)."""

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
        self.name, self.config = name, dict(config or {})
        self.server, self.token, self.dir = server, token, dir
        self.every, self.buffers, self.example_input = every, buffers, example_input
        self.run = run
        self._own_run = run is None

    def _active(self, state: Any) -> bool:
        return bool(state.is_world_process_zero) and self.run is not None and not self.run.finished

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if model is None or optimizer is None:
            raise RuntimeError("netlapse: the Trainer passed no model or optimizer to on_train_begin")
        if self.run is None:
            import netlapse

            config = {**args.to_sanitized_dict(), **self.config}
            self.run = netlapse.init(
                name=self.name or args.run_name or type(model).__name__,
                config=config,
                server=self.server,
                token=self.token,
                dir=self.dir,
            )
            self._own_run = True
        self.run.watch(
            model,
            _innermost(optimizer),
            every=self.every,
            example_input=self.example_input,
            buffers=self.buffers,
        )

    def on_log(
        self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kw: Any
    ) -> None:
        if logs and self._active(state):
            metrics = _numbers(logs)
            if metrics:
                self.run.log(metrics)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._own_run and self._active(state):
            self.run.finish()

    # -- around trainer.train(): the Trainer tells callbacks nothing about errors

    def __enter__(self) -> NetlapseCallback:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None or not self._own_run or self.run is None or self.run.finished:
            return
        if isinstance(exc, KeyboardInterrupt):
            self.run.finish(status="cancelled", error="interrupted (KeyboardInterrupt)")
        else:
            self.run.finish(status="failed", error=f"{type(exc).__name__}: {exc}"[:4000])
