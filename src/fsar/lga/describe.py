"""Command-line side of LGA's textual anatomy, and the one import for all of it.

The work is split by concern:

* :mod:`fsar.lga.llm` -- the describers (OpenAI-compatible chat server, local
  ``transformers`` model, template fallback), the prompt and the reply validation, and
  :data:`~fsar.lga.llm.DESCRIBER_OPTIONS` (``--llm-url`` ...) with
  :func:`~fsar.lga.llm.describer_from_options`;
* :mod:`fsar.lga.descriptions` -- the reviewable JSON description cache and the
  resolution cache -> LLM -> template;
* this module -- argparse glue: :func:`add_describer_arguments`,
  :func:`describer_from_args` and :func:`method_options_from_args`, for scripts and for
  ``fsar describe``. The train/eval/predict commands get the same options from the
  ``lga`` method's own declaration (:meth:`fsar.methods.lga.LGA.options`).

Everything the two modules above export is importable from here as well.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from fsar.lga.descriptions import (  # noqa: F401  (re-exported)
    CACHE_FORMAT,
    CACHE_VERSION,
    DESCRIPTIONS_OPTION,
    CacheEntry,
    DescriptionCache,
    DescriptionReport,
    descriptions_for,
    load_descriptions,
    read_class_names,
    resolve_descriptions,
)
from fsar.lga.llm import (  # noqa: F401  (re-exported)
    DESCRIBER_OPTIONS,
    MAX_WORDS,
    TEMPLATE_SOURCE,
    ChatDescriber,
    DescriptionError,
    Describer,
    LLMDescriber,
    TemplateDescriber,
    TransformersDescriber,
    TransientLLMError,
    build_messages,
    chat_completions_url,
    describer_from_options,
    parse_stages,
    stage_names,
)

__all__ = [
    "CACHE_FORMAT",
    "DESCRIPTIONS_OPTION",
    "ChatDescriber",
    "DescriptionCache",
    "DescriptionError",
    "DescriptionReport",
    "Describer",
    "LLMDescriber",
    "TemplateDescriber",
    "TransformersDescriber",
    "add_describer_arguments",
    "build_messages",
    "chat_completions_url",
    "describer_from_args",
    "load_descriptions",
    "method_options_from_args",
    "parse_stages",
    "read_class_names",
    "resolve_descriptions",
    "stage_names",
]

def add_describer_arguments(parser: argparse.ArgumentParser, *, cache_flag: bool = True) -> None:
    """Options selecting the describer (and, with ``cache_flag``, ``--descriptions CACHE.json``)."""
    from fsar.cli._args import add_method_options

    options = ((DESCRIPTIONS_OPTION,) if cache_flag else ()) + DESCRIBER_OPTIONS
    add_method_options(parser, options, title="LGA textual anatomy (class descriptions)")


def _values(args: argparse.Namespace) -> dict:
    names = [o.name for o in (DESCRIPTIONS_OPTION, *DESCRIBER_OPTIONS)]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def describer_from_args(args: argparse.Namespace, *, device: str = "cpu") -> LLMDescriber | None:
    """The LLM describer the options select, or None (template fallback)."""
    return describer_from_options(_values(args), device=device)


def method_options_from_args(
    args: argparse.Namespace, class_names: Sequence[str] | None = None, *, num_stages: int | None = None
) -> dict:
    """``create_method("lga", **options)`` keywords from the CLI options.

    Returns ``{"descriptions": dict | None, "describer": LLMDescriber | None}``. With
    ``class_names`` and ``--descriptions`` the cache is read and completed for those
    classes (and saved); classes met later are described on the fly by the method.
    ``num_stages`` (L) defaults to a ``-O num_stages=L`` method option when present, else 3.
    """
    if num_stages is None:
        options = dict(getattr(args, "method_options", None) or {})
        num_stages = int(options.get("num_stages", 3))
    describer = describer_from_args(args)
    descriptions = descriptions_for(
        getattr(args, "descriptions", None), describer=describer, class_names=class_names, num_stages=num_stages
    )
    return {"descriptions": descriptions, "describer": describer}
