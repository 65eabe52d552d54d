"""netlapse: every parameter of a model after every training batch.

``netlapse.init(...)`` starts recording your own training (the SDK, :mod:`netlapse.sdk`). It is imported on
first use, so ``import netlapse`` stays light (no torch) for the CLI and the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netlapse.sdk import Run, init

__all__ = ["Run", "init"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from netlapse import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'netlapse' has no attribute {name!r}")
