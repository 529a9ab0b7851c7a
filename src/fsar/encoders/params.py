"""Parameter counts per module: what trains and what is frozen (MA-FSAR Table 4, ``fsar info``)."""

from __future__ import annotations

from torch import nn


def build_lazy_parts(module: nn.Module) -> None:
    """Build the parts of ``module`` built on first use (``build_lazy()``, e.g. the embedded pair's
    text tower), so that counts include them."""
    for sub in list(module.modules()):
        hook = getattr(sub, "build_lazy", None)
        if callable(hook):
            hook()


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` numbers of scalar parameters; shared parameters count once."""
    build_lazy_parts(module)
    total = trainable = 0
    for parameter in module.parameters():
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return total, trainable


def parameter_report(module: nn.Module, *, depth: int = 2) -> list[tuple[str, int, int]]:
    """Rows ``(module name, total, trainable)`` grouping parameters by the first ``depth`` name parts.

    For a :class:`~fsar.encoders.clip.ClipEncoder` with adapters, depth 2 gives ``clip.vision_model``,
    ``clip.text_model``, ``clip.visual_projection``, ``clip.text_projection``, ``clip.logit_scale``,
    ``fgma.gta_adapters``, ``fgma.lsta_adapters``, ``fgma.ja_adapters``, ``fgma.fc_text`` ... in
    registration order. The last row is ``("total", total, trainable)``. Shared parameters are counted once,
    under the first name that reaches them.
    """
    if depth < 1:
        raise ValueError(f"parameter_report: depth must be >= 1, got {depth}")
    build_lazy_parts(module)
    groups: dict[str, list[int]] = {}
    for name, parameter in module.named_parameters():
        key = ".".join(name.split(".")[:depth])
        row = groups.setdefault(key, [0, 0])
        row[0] += parameter.numel()
        if parameter.requires_grad:
            row[1] += parameter.numel()
    rows = [(key, total, trainable) for key, (total, trainable) in groups.items()]
    rows.append(("total", *count_parameters(module)))
    return rows


def format_report(rows: list[tuple[str, int, int]]) -> str:
    """A plain-text table of :func:`parameter_report` rows (counts with thousands separators and in M)."""
    width = max(len("module"), *(len(name) for name, _, _ in rows))
    lines = [f"{'module':<{width}}  {'total':>13}  {'trainable':>13}  {'total M':>8}  {'train M':>8}"]
    for name, total, trainable in rows:
        lines.append(
            f"{name:<{width}}  {total:>13,}  {trainable:>13,}  {total / 1e6:>8.2f}  {trainable / 1e6:>8.2f}"
        )
    return "\n".join(lines)
