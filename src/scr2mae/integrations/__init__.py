"""Integrations of the masking core with other libraries' training loops.

Each integration is its own module, imported explicitly because it needs that library:
:mod:`scr2mae.integrations.transformers` (the ``language`` extra) gives Hugging Face
``transformers`` an R2MAE data collator and a callback that feeds it the training step.
"""

__all__: list[str] = []
