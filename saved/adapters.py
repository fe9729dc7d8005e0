"""Moved: the old home of the input forms, model calls and embedding form.

:mod:`saved.inputs` (the :class:`Inputs` form, streaming, batches), :mod:`saved._runtime`
(running the model) and :mod:`saved.embedding` (the form boundary mining perturbs) hold them
now. The names are re-exported here so code written against ``saved.adapters`` keeps working.
"""

from ._runtime import (
    forward_logits,
    frozen_eval,
    logits_of,
    model_device,
    on_device,
    predict_logits,
    resolve_device,
)
from .embedding import ContinuousForm, continuous_form, embed_inputs, word_embeddings
from .inputs import (
    DEFAULT_BATCH_SIZE,
    Batch,
    Inputs,
    as_inputs,
    batch_to,
    iter_inputs,
    match_dtype,
    model_dtype,
    repeat_batch,
    sample_inputs,
    trim_padding,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Batch",
    "ContinuousForm",
    "Inputs",
    "as_inputs",
    "batch_to",
    "continuous_form",
    "embed_inputs",
    "forward_logits",
    "frozen_eval",
    "iter_inputs",
    "logits_of",
    "match_dtype",
    "model_device",
    "model_dtype",
    "on_device",
    "predict_logits",
    "repeat_batch",
    "resolve_device",
    "sample_inputs",
    "trim_padding",
    "word_embeddings",
]
