"""Phase 3 of SAVED: what a component keeps, and how it learns to keep it.

* ``space`` — :class:`MaskSpace`: groups of maskable things, quotas, binarisation;
* ``discovery`` — a model's structural units (heads, FFN neurons, coupled channels);
* ``units`` — :class:`UnitSpace`: the structural space, masked runs and surgery;
* ``hooks`` — masking by forward hooks (K components in one batched pass);
* ``surgery`` — removing units physically (Torch-Pruning, attention head counts);
* ``weights`` — :class:`WeightSpace`: per-weight (unstructured) masks;
* ``objectives`` and ``lbmask`` — LBMask mask learning; ``adaptive`` — ``sparsity="auto"``.
"""
