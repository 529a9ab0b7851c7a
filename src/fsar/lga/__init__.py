"""LGA (Language-Guided Action Anatomy, ICCV 2025) building blocks.

* :mod:`fsar.lga.describe` -- textual anatomy: LLM describers, description cache, template fallback.
* :mod:`fsar.lga.segment` -- visual anatomy: CLUSTER-Segment, uniform (HARD), TW-FINCH, overlaps.
* :mod:`fsar.lga.fusion` -- Fine-grained Multimodal Fusion (stage-level cross-attention).

The method itself (``fsar.create_method("lga", ...)``) lives in :mod:`fsar.methods.lga`.
"""
