"""Callbacks that record training run by other libraries with the netlapse SDK (docs/sdk.md, "Integrations").

- :mod:`netlapse.integrations.lightning` — ``NetlapseCallback`` for a PyTorch Lightning ``Trainer``
  (``pip install 'netlapse[lightning]'``).
- :mod:`netlapse.integrations.transformers` — ``NetlapseCallback`` for a Hugging Face ``Trainer``
  (``pip install 'netlapse[transformers]'``).

Both use only the SDK's public API (``netlapse.init``, ``run.watch``, ``run.log``, ``run.finish``), record
only on the process of global rank 0, and mark the run ``failed`` with the exception's text when training
raises.
"""
