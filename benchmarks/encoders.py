"""Encoder benchmark: MA-FSAR parameter counts (paper Table 4) and frames per second of each backbone.

    /work/venv/bin/python benchmarks/encoders.py [--threads 2] [--repeats 3] [--parts params,fps,train]

Part 1 builds full-size CLIP ViT-B/32 (random weights: counts do not depend on values) with every FgMA
adaptation and prints the per-module breakdown, then the Table 4 rows (total / tunable) beside the
paper's, with TPCM's size taken from ``fsar.methods.tpcm`` when it exists (else spec §4's constant).

Part 2 measures frames per second on this CPU for ``clip-vit-b32`` and ``clip-vit-b16`` (full size,
random weights: speed does not depend on values), frozen vs with adapters (support branch, the heaviest:
N+3 tokens), and ``effnet-lite0+minilm``; and each as a fraction of the machine's float32 matrix-multiply
FLOP rate, from FLOPs per frame (analytic for the ViT, checked against ``torch.utils.flop_counter``;
``FlopCounterMode`` for EfficientNet). Part 3 times one training step (forward + backward) of B/32 with
full fine-tuning vs adapters and counts the activations each keeps for backward.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from fsar.encoders import create_encoder
from fsar.encoders.fgma import FgMA, FgMAConfig
from fsar.encoders.params import count_parameters, format_report, parameter_report

# Spec §4 / §8: TPCM = MHA 1,050,624 + FFN 2,099,712 (+ 2 LayerNorms 2,048).
TPCM_SPEC = 1_050_624 + 2_099_712 + 2_048
PAPER_TABLE4 = {  # row -> (total M, tunable M), SSv2-Small 5-way 1-shot, ViT-B/32; the paper's text gives
    # the finer tunable figures 3.15, 90.99, 7.94 and 18.54 where the table rounds to one decimal.
    "frozen (CLIP frozen + TPCM)": (154.4, 3.15),
    "full fine-tuning, visual only": (154.4, 90.99),
    "+LMA/LSTA": (159.2, 7.94),
    "+GTA": (166.3, 15.1),
    "+JA (MA-FSAR)": (169.8, 18.54),
}
T = 8  # frames per clip


def tpcm_parameters() -> tuple[int, str]:
    try:
        from fsar.methods.tpcm import TPCM

        return count_parameters(TPCM(dim=512))[0], "fsar.methods.tpcm.TPCM(dim=512)"
    except Exception as error:  # noqa: BLE001 - report and fall back to the spec's figure
        return TPCM_SPEC, f"spec constant ({type(error).__name__}: {error})"


def part_parameters() -> None:
    print("=" * 100)
    print("1. Parameters, CLIP ViT-B/32, all FgMA adaptations (gta_adapters_per_layer=1)")
    encoder = create_encoder("clip-vit-b32", weights="random", finetune="adapters")
    print(format_report(parameter_report(encoder)))
    tpcm, source = tpcm_parameters()
    print(f"\nTPCM: {tpcm:,} parameters ({source})")
    clip_total = count_parameters(encoder.clip)[0]
    visual = count_parameters(encoder.clip.vision_model)[0] + count_parameters(encoder.clip.visual_projection)[0]

    def fgma(**switches) -> int:
        return count_parameters(FgMA(width=768, text_dim=512, num_layers=12, config=FgMAConfig(**switches)))[0]

    for per_layer in (1, 2):
        rows = {
            "frozen (CLIP frozen + TPCM)": 0,
            "full fine-tuning, visual only": None,
            "+LMA/LSTA": fgma(gta=False, ja=False),
            "+GTA": fgma(ja=False, gta_adapters_per_layer=per_layer),
            "+JA (MA-FSAR)": fgma(gta_adapters_per_layer=per_layer),
        }
        print(f"\nTable 4, gta_adapters_per_layer={per_layer} (ours: exact counts; paper: rounded M)")
        print(f"{'row':<32} {'total':>13} {'tunable':>12} {'total M':>8} {'tun. M':>7} | {'paper M':>7} {'paper tun.':>10} {'gap tun.':>8}")
        for name, adapters in rows.items():
            tunable = visual + tpcm if adapters is None else adapters + tpcm
            total = clip_total + tpcm + (adapters or 0)
            paper_total, paper_tunable = PAPER_TABLE4[name]
            print(
                f"{name:<32} {total:>13,} {tunable:>12,} {total / 1e6:>8.2f} {tunable / 1e6:>7.2f} | "
                f"{paper_total:>7.1f} {paper_tunable:>10.2f} {paper_tunable - tunable / 1e6:>+8.2f}"
            )
        print(f"  remaining gap to the paper's 18.54M tunable: {18.54 - (rows['+JA (MA-FSAR)'] + tpcm) / 1e6:+.2f}M")


# -- FLOPs -------------------------------------------------------------------------------------------------


def vit_flops_per_frame(*, width: int, layers: int, patch: int, image: int, proj: int = 512) -> int:
    """Multiply-adds x2 of the linear maps and attention products of one frame (LN/GELU/softmax not counted)."""
    n = (image // patch) ** 2
    tokens = n + 1
    patch_embed = 2 * n * 3 * patch * patch * width
    per_layer = 24 * tokens * width * width + 4 * tokens * tokens * width  # qkv+out 8LD², mlp 16LD², QK^T+AV 4L²D
    return patch_embed + layers * per_layer + 2 * width * proj


def fgma_extra_flops_per_frame(
    *, width: int, layers: int, patch: int, image: int, num_frames: int, support: bool, gta_adapters: int = 1
) -> int:
    """FLOPs FgMA adds to one frame: GTA attention + adapters, 1-2 appended tokens, Adapter_S, Adapter_J."""
    n = (image // patch) ** 2
    tokens = n + 1
    appended = 2 if support else 1
    adapter = width * width  # one 0.25-bottleneck adapter on one token: 2 * (D * D/4 + D/4 * D)
    gta = 8 * width * width + 4 * num_frames * width + gta_adapters * adapter  # per frame's class token
    longer = tokens + appended
    spatial = 8 * appended * width * width + 4 * (longer * longer - tokens * tokens) * width
    lsta_ja = 2 * tokens * adapter
    fc_text = (2 * 512 * width) // num_frames if support else 0
    return layers * (gta + spatial + lsta_ja) + fc_text


def counted_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_rate(repeats: int = 10) -> float:
    """Best float32 matmul FLOP/s over a square 2048^3 product and a ViT-MLP-shaped one (1600x768 @ 768x3072)."""
    rates = []
    for m, k, n in ((2048, 2048, 2048), (1600, 768, 3072)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        best = min(_timed(lambda: a @ b)[0] for _ in range(repeats))
        rates.append(2 * m * k * n / best)
    return max(rates)


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(functions: dict[str, object], rounds: int) -> dict[str, tuple[float, float]]:
    """Best-of-``rounds`` (wall, cpu) seconds per function, running them in turns so load changes hit all alike.

    The minimum, not the median: on the shared, oversubscribed machine interference only ever adds time,
    so the least disturbed run is the best estimate of the code's own cost.
    """
    for fn in functions.values():
        fn()  # warm-up
    runs: dict[str, list[tuple[float, float]]] = {key: [] for key in functions}
    for _ in range(rounds):
        for key, fn in functions.items():
            runs[key].append(_timed(fn))
    return {key: (min(r[0] for r in values), min(r[1] for r in values)) for key, values in runs.items()}


def part_speed(repeats: int) -> None:
    print("=" * 100)
    rate = matmul_rate()
    print(f"2. Frames per second, {torch.get_num_threads()} threads, one clip of {T} frames per call, no grad, eval;"
          f" frozen and adapters timed in turns")
    print(f"   float32 matmul (best of 2048^3 and 1600x768x3072): {rate / 1e9:.1f} GFLOP/s; "
          f"load average {os.getloadavg()}")
    print(f"{'backbone':<24} {'mode':<10} {'GFLOP/frame':>11} {'fps wall':>9} {'fps cpu':>8} {'% matmul':>9}")
    for name, patch in (("clip-vit-b32", 32), ("clip-vit-b16", 16)):
        base = vit_flops_per_frame(width=768, layers=12, patch=patch, image=224)
        frames = torch.randn(1, T, 3, 224, 224)
        text = torch.randn(1, 512)
        encoders = {mode: create_encoder(name, weights="random", finetune=mode).eval() for mode in ("frozen", "adapters")}
        flops = {
            "frozen": base,
            "adapters": base
            + fgma_extra_flops_per_frame(width=768, layers=12, patch=patch, image=224, num_frames=T, support=True),
        }
        with torch.no_grad():
            checks = {mode: counted_flops(lambda e=e: e.encode_frames(frames, text)) / T for mode, e in encoders.items()}
            times = interleaved({mode: (lambda e=e: e.encode_frames(frames, text)) for mode, e in encoders.items()}, repeats)
        for mode in encoders:
            wall, cpu = times[mode]
            fps = T / wall
            print(f"{name:<24} {mode:<10} {flops[mode] / 1e9:>11.2f} {fps:>9.2f} {T / cpu:>8.2f} "
                  f"{100 * fps * flops[mode] / rate:>8.1f}%   (FlopCounterMode, which skips the CPU SDPA kernel: "
                  f"{checks[mode] / 1e9:.2f})")
        print(f"{'':<24} adapters / frozen time: {times['adapters'][0] / times['frozen'][0]:.2f} (wall), "
              f"FLOPs ratio {flops['adapters'] / flops['frozen']:.2f}")
        del encoders
    try:
        encoder = create_encoder("effnet-lite0+minilm").eval()
    except Exception as error:  # noqa: BLE001
        print(f"{'effnet-lite0+minilm':<24} skipped: {type(error).__name__}: {error}")
        return
    frames = torch.randn(1, T, 3, encoder.image_size, encoder.image_size)
    with torch.no_grad():
        flops = counted_flops(lambda: encoder.encode_frames(frames)) / T
        wall, cpu = interleaved({"e": lambda: encoder.encode_frames(frames)}, repeats)["e"]
    fps = T / wall
    print(f"{'effnet-lite0+minilm':<24} {'frozen':<10} {flops / 1e9:>11.2f} {fps:>9.2f} {T / cpu:>8.2f} "
          f"{100 * fps * flops / rate:>8.1f}%   (FlopCounterMode; no adapters exist for this pair)")


def saved_activation_bytes(encoder, fn) -> tuple[torch.Tensor, int]:
    """Run ``fn`` and total the storages autograd keeps for backward, parameters excluded."""
    parameters = {p.untyped_storage().data_ptr() for p in encoder.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return out, sum(storages.values())


def part_training(repeats: int) -> None:
    print("=" * 100)
    print(f"3. One training step of clip-vit-b32 (1 support clip with text + 1 query clip, {T} frames each):"
          " forward + backward; modes timed in turns")
    support, query = torch.randn(1, T, 3, 224, 224), torch.randn(1, T, 3, 224, 224)
    text = torch.randn(1, 512)
    setups = {"full": ("full", False), "adapters": ("adapters", False), "adapters + checkpointing": ("adapters", True)}
    encoders = {
        label: create_encoder("clip-vit-b32", weights="random", finetune=mode, gradient_checkpointing=ckpt).train()
        for label, (mode, ckpt) in setups.items()
    }

    def step(encoder):
        encoder.zero_grad(set_to_none=True)
        s = encoder.encode_frames(support, text)
        q = encoder.encode_frames(query)
        torch.nn.functional.cosine_similarity(s, q, dim=-1).sum().backward()

    times = interleaved({label: (lambda e=e: step(e)) for label, e in encoders.items()}, repeats)
    print(f"{'mode':<26} {'step s wall':>11} {'step s cpu':>10} {'vs full':>7} {'saved act. MB':>13} "
          f"{'trainable':>12} {'grads+Adam MB':>13}")
    for label, encoder in encoders.items():
        _, saved = saved_activation_bytes(
            encoder, lambda: (encoder.encode_frames(support, text), encoder.encode_frames(query))
        )
        wall, cpu = times[label]
        trainable = count_parameters(encoder)[1]
        print(f"{label:<26} {wall:>11.2f} {cpu:>10.2f} {wall / times['full'][0]:>6.2f}x {saved / 2**20:>13.0f} "
              f"{trainable:>12,} {3 * 4 * trainable / 2**20:>13.0f}")
    print(f"   load average {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--parts", default="params,fps,train", help="comma-separated subset of params, fps, train (default: all)"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if parts - {"params", "fps", "train"}:
        parser.error(f"unknown part(s) {sorted(parts - {'params', 'fps', 'train'})}")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} rounds, load average {os.getloadavg()}")
    if "params" in parts:
        part_parameters()
    if "fps" in parts:
        part_speed(args.repeats)
    if "train" in parts:
        part_training(args.repeats)


if __name__ == "__main__":
    main()
