"""FSAR-LLaVA figures: parameter counts, extraction cost, and a plumbing check beside the other methods.

    /work/venv/bin/python benchmarks/fsar_llava.py [--parts params,extract,accuracy] [--threads 2]

1. ``params``: the real Video-LLaVA-7B configuration (``video_llava_7b_config``) built on the meta
   device (no memory, no download): total and per-part parameter counts of the frozen MLLM; then
   the trainable MFEM + CTPC of ``fsar-llava`` at its width (4096 -> d 512, T 8), per module, and
   of the vision-tower baseline ``fsar-llava-vision`` (1024 -> 512).
2. ``extract``: the tiny random Video-LLaVA of the tests (2+4 layers, width 32/64, 8 frames x 5
   tokens) on this CPU: seconds per clip of ``encode_clips`` as the extraction calls it (with each
   clip's label, so the query prompt and the label-aware support prompt, which share the video's
   decoder pass), the label-free pass alone (median of repeats), and the bytes per
   clip of a real ``extract_features`` cache (shard bytes / clips); then the same two figures for
   the real model as formulas (stream widths x 4 bytes; decoder FLOPs ~ 2 x parameters used x tokens).
3. ``accuracy``: a PLUMBING CHECK, not accuracy. The tiny MLLM has random weights, so its features
   carry no knowledge; the numbers only show that every path (extract -> cache -> streams -> train
   -> evaluate) runs and that the trained heads learn something from the random features. On the
   synthetic action set (rendered here, 64 px), 5-way 1-shot on held-out classes: ``proto`` and
   ``otam`` on the decoder features, ``fsar-llava`` and ``fsar-llava-vision`` trained from the cache.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from fsar.encoders.params import count_parameters

SMALL = dict(dim=64, temporal_heads=2, temporal_ffn_dim=128, enhancement_heads=2, refinement_heads=2)


def millions(n: int) -> str:
    return f"{n / 1e6:,.2f}M"


def part_params() -> None:
    from transformers import VideoLlavaForConditionalGeneration

    from fsar.encoders.video_llava import video_llava_7b_config
    from fsar.methods.fsar_llava import CTPC, MFEM

    print("## 1. Parameters\n")
    with torch.device("meta"):
        model = VideoLlavaForConditionalGeneration(video_llava_7b_config())
    parts = {
        "video tower (CLIP-L/14)": model.model.video_tower,
        "image tower (CLIP-L/14, unused for video)": model.model.image_tower,
        "projector (2-layer MLP)": model.model.multi_modal_projector,
        "LLM decoder (Vicuna-7B, 32 layers)": model.model.language_model,
        "LM head": model.lm_head,
    }
    total = sum(p.numel() for p in model.parameters())
    print("| Video-LLaVA-7B part (frozen) | parameters |\n|---|---:|")
    for name, module in parts.items():
        print(f"| {name} | {sum(p.numel() for p in module.parameters()):,} |")
    print(f"| **total** | **{total:,}** ({total / 1e9:.3f}B) |\n")

    d, width, frames = 512, 4096, 8
    mfem = MFEM(visual_dim=width, text_dim=width, dim=d, frames=frames, heads=8, ffn_dim=2048)
    ctpc = CTPC(dim=d, heads=8)
    rows = {
        "MFEM visual input (LN + 4096->512)": mfem.visual_in,
        "MFEM temporal position embedding": None,
        "MFEM temporal Transformer layer": mfem.temporal,
        "MFEM textual head (LN + 4096->512 + 512->512)": mfem.text_head,
        "MFEM mutual enhancement (cross-attn + MLP)": [mfem.cross_norm, mfem.cross, mfem.text_update],
        "CTPC task refinement (visual + textual attention)": ctpc,
    }
    print("| fsar-llava trainable module | parameters |\n|---|---:|")
    for name, module in rows.items():
        if module is None:
            n = mfem.position.numel()
        elif isinstance(module, list):
            n = sum(count_parameters(m)[0] for m in module)
        else:
            n = count_parameters(module)[0]
        print(f"| {name} | {n:,} |")
    trainable = count_parameters(mfem)[0] + count_parameters(ctpc)[0]
    vision = MFEM(visual_dim=1024, text_dim=None, dim=d, frames=frames, mutual_enhancement=False)
    vision_ctpc = CTPC(dim=d, heads=8, text=False)
    vision_total = count_parameters(vision)[0] + count_parameters(vision_ctpc)[0]
    print(f"| **fsar-llava MFEM + CTPC** | **{trainable:,}** ({millions(trainable)}) |")
    print(f"| fsar-llava-vision (1024-d vision tower, visual branch + visual refinement) | {vision_total:,} "
          f"({millions(vision_total)}) |")
    print(f"\nTrainable share: {trainable / (total + trainable):.4%} of all parameters; MPMM has none.\n")


def tiny_folder(root: Path) -> Path:
    from fsar.encoders.video_llava import save_tiny_video_llava

    return save_tiny_video_llava(root / "tiny-video-llava")


def part_extract(work: Path, repeats: int) -> None:
    from fsar.data.loading import ClipLoader
    from fsar.data.manifest import Manifest
    from fsar.data.synth import render_dataset
    from fsar.data.transforms import TransformConfig
    from fsar.encoders import create_encoder
    from fsar.encoders.cache import extract_features

    print("## 2. Extraction cost\n")
    folder = tiny_folder(work)
    encoder = create_encoder("video-llava", weights=str(folder), batch_size=4)
    clips = torch.randn(4, encoder.num_frames, 3, encoder.image_size, encoder.image_size)
    labels = ["jumping", "running", "pushing something", "waving"]
    encoder.encode_clips(clips, labels=labels)  # warm-up (and the lazy load)
    times, label_free = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        encoder.encode_clips(clips, labels=labels)
        times.append((time.perf_counter() - start) / clips.shape[0])
        start = time.perf_counter()
        encoder.encode_clips(clips)
        label_free.append((time.perf_counter() - start) / clips.shape[0])
    data = render_dataset(work / "synth-extract", classes=6, videos_per_class=4, size=64, progress=False)
    manifest = Manifest.from_folder(data, progress=False)
    loader = ClipLoader(num_frames=encoder.num_frames, transform=TransformConfig.for_encoder(encoder))
    out = work / "cache-extract"
    summary = extract_features(manifest, encoder, loader, out, progress=False, batch_size=4)
    shard_bytes = sum(p.stat().st_size for p in out.glob("shard-*.safetensors"))
    class_bytes = sum(p.stat().st_size for p in out.glob("classes-*.safetensors"))
    T, D, Dv = encoder.num_frames, encoder.feature_dim, encoder.vision_dim
    floats = T * D + 2 * D + T * Dv
    print(f"Tiny Video-LLaVA ({encoder.decoder_depth} decoder layers, width {D}, vision width {Dv}, "
          f"{T} frames x {encoder.layout.tokens_per_group} tokens), layer {encoder.layer}, float32, CPU:\n")
    print("| figure | value |\n|---|---:|")
    print(f"| encode_clips with labels (query + support prompt), seconds per clip (batch 4, median of {repeats}) | "
          f"{statistics.median(times):.4f} |")
    print(f"| of which the label-free pass alone (no labels: what a query costs) | {statistics.median(label_free):.4f} |")
    print(f"| extract_features end to end, clips/s (decode + transform + encode + write) | "
          f"{summary.clips_per_second:.1f} |")
    print(f"| cache bytes per clip (shard bytes / {summary.extracted} clips) | {shard_bytes / summary.extracted:,.0f} |")
    print(f"| of which stream payload (T*D + 2D + T*D_vis) x 4 B | {floats * 4:,} |")
    print(f"| class-stream file ({len(manifest.classes)} classes, D floats each) | {class_bytes:,} |\n")

    T, D, Dv, depth = 8, 4096, 1024, 32
    layer = round(0.75 * depth)
    tokens = 8 * 257 + 40  # video tokens + the query prompt around them (about 40 tokens)
    decoder_per_layer = 4 * D * D + 3 * D * 11008  # attention + SwiGLU MLP weights of one LLaMA layer
    # one decoder pass over the prefix + video and both prompts' suffixes (~40 tokens each), one vision pass
    tokens += 40
    flops = 2 * decoder_per_layer * layer * tokens + 2 * 303_000_000 * 257 * T + 2 * 21_000_000 * 257 * T
    print("Real Video-LLaVA-7B (formula, not measured: no GPU and no weights in this session):\n")
    print("| figure | formula | value |\n|---|---|---:|")
    print(f"| cache bytes per clip, float32 | (T*D + 2D + T*D_vis) * 4 = (8*4096 + 2*4096 + 8*1024) * 4 | "
          f"{(T * D + 2 * D + T * Dv) * 4:,} |")
    print(f"| per class | D * 4 | {D * 4:,} |")
    print(f"| decoder FLOPs per clip up to layer l*={layer}, both prompts | 2 * (4D^2 + 3*D*11008) * l* * tokens "
          f"(tokens = 8*257 + 2 x ~40: the video pass is shared) | {2 * decoder_per_layer * layer * tokens / 1e12:.1f} T |")
    print(f"| vision tower + projector FLOPs per clip | 2 * (303M + 21M) * 257 * T | "
          f"{(2 * 303e6 * 257 * T + 2 * 21e6 * 257 * T) / 1e12:.1f} T |")
    print(f"| seconds per clip at 300 TFLOP/s sustained (bf16, H100 class) | FLOPs / 3e14 | {flops / 3e14:.3f} |")
    print(f"| hidden states kept if all layers were returned | tokens * (L+1) * D * 2 B | "
          f"{tokens * (depth + 1) * D * 2 / 2**20:,.0f} MiB (the encoder keeps one layer: "
          f"{tokens * D * 2 / 2**20:,.0f} MiB) |\n")


def part_accuracy(work: Path, episodes: int, train_steps: int) -> None:
    from fsar.data.episodes import EpisodeSampler
    from fsar.data.loading import ClipLoader
    from fsar.data.manifest import Manifest
    from fsar.data.synth import class_names, render_dataset
    from fsar.data.transforms import TransformConfig
    from fsar.encoders import create_encoder
    from fsar.encoders.cache import FeatureCache, extract_features
    from fsar.engine.evaluate import confidence_interval
    from fsar.methods import create_method

    print("## 3. Plumbing check on the synthetic set (random tiny MLLM: NOT an accuracy figure)\n")
    names = class_names()[:20]
    data = render_dataset(work / "synth-acc", classes=names, videos_per_class=6, size=64, progress=False)
    manifest = Manifest.from_folder(data, progress=False)
    folder = work / "tiny-video-llava"
    if not folder.exists():
        tiny_folder(work)
    encoder = create_encoder("video-llava", weights=str(folder), batch_size=8)
    loader = ClipLoader(num_frames=encoder.num_frames, transform=TransformConfig.for_encoder(encoder))
    out = work / "cache-acc"
    extract_features(manifest, encoder, loader, out, progress=False, batch_size=8)
    cache = FeatureCache(out)
    train_classes, test_classes = names[:14], names[14:]
    train = EpisodeSampler(manifest.subset(train_classes), way=5, shot=1, queries=3, seed=0)
    test = EpisodeSampler(manifest.subset(test_classes), way=5, shot=1, queries=1, seed=1)

    def evaluate(model) -> tuple[float, float]:
        model.eval()
        streams = getattr(model, "required_streams", lambda: ())()
        accuracies = []
        with torch.no_grad():
            for i in range(episodes):
                inputs = cache.load_episode(test.episode(i), loader, streams=streams)
                predicted = model(inputs).log_probs.argmax(-1)
                accuracies.append(float((predicted == inputs.query_labels).float().mean()))
        mean, ci, _ = confidence_interval(accuracies)
        return 100 * mean, 100 * ci

    def trained(name: str, **options):
        torch.manual_seed(0)
        model = create_method(name, backbone=encoder, **{**SMALL, **options})
        optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                                      weight_decay=0.01)
        model.train()
        start = time.perf_counter()
        for step in range(train_steps):
            inputs = cache.load_episode(train.episode(step), loader, streams=model.required_streams())
            loss = model(inputs).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return model, time.perf_counter() - start

    rows = []
    for name in ("proto", "otam"):
        rows.append((name, "training-free", *evaluate(create_method(name, backbone=encoder))))
    for name in ("fsar-llava", "fsar-llava-vision"):
        model, seconds = trained(name)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        rows.append((name, f"{train_steps} episodes, {seconds:.0f} s, {trainable:,} trainable", *evaluate(model)))
    print(f"5-way 1-shot, {episodes} test episodes (1 query per class) on 6 held-out classes; training on 14 "
          f"classes (3 queries per class); tiny random Video-LLaVA, layer {encoder.layer} of "
          f"{encoder.decoder_depth}; d = {SMALL['dim']} for the trained heads.\n")
    print("| method | training | accuracy % ± 95% CI |\n|---|---|---:|")
    for name, how, mean, ci in rows:
        print(f"| {name} | {how} | {mean:.1f} ± {ci:.1f} |")
    print(f"\nChance is 20%. Everything reads the one cache written by `extract_features` "
          f"({len(cache)} clips).\n")


SPEED_METHODS = ("fsar-llava", "fsar-llava-vision")


def speed_setup(work: Path):
    """The speed part's set-up in ``work`` (kept and reused): the synthetic set, the wide random
    Video-LLaVA, its feature cache. Returns (manifest, encoder, cache directory)."""
    from fsar.data.manifest import Manifest
    from fsar.data.synth import render_dataset
    from fsar.encoders import create_encoder
    from fsar.encoders.cache import extract_features
    from fsar.encoders.video_llava import save_tiny_video_llava
    from fsar.engine.sources import loader_for

    data = work / "synth-speed"
    if not (data / "synth.json").is_file():
        render_dataset(data, classes=12, videos_per_class=10, size=64, progress=False)
    manifest = Manifest.from_folder(data, progress=False)
    folder = work / "wide-video-llava"
    if not (folder / "config.json").is_file():
        save_tiny_video_llava(folder, width=4096, layers=1, heads=32, vision_width=1024, vision_layers=1)
    encoder = create_encoder("video-llava", weights=str(folder), batch_size=8)
    loader = loader_for(encoder, num_frames=encoder.num_frames)
    out = work / "cache-speed"
    extract_features(manifest, encoder, loader, out, progress=False, batch_size=8)  # resumes: nothing left to do
    return manifest, encoder, out


def speed_measure(work: Path, episodes: int, profile_episodes: int) -> dict:
    """One code tree in this process: episodes/s of each method (wall and per CPU second of the process)
    from ``evaluate`` on the cache, after a 20-episode warm-up; each measured call starts with an empty
    per-clip memory (every evaluate() does), so it pays for every clip once. Then a cProfile of
    fsar-llava 1-shot, grouped by where the time goes."""
    import cProfile
    import pstats

    import fsar
    from fsar.engine.evaluate import evaluate
    from fsar.engine.sources import episode_source
    from fsar.methods import create_method

    manifest, encoder, out = speed_setup(work)
    record = {"commit": _commit(Path(fsar.__file__).parents[2]), "threads": torch.get_num_threads(),
              "uptime_before": _uptime(), "rates": {}, "trainable": {}}
    sources = {}
    for name in SPEED_METHODS:
        torch.manual_seed(0)
        method = create_method(name, backbone=encoder)
        record["trainable"][name] = sum(p.numel() for p in method.parameters() if p.requires_grad)
        for shot in (1, 5):
            source = episode_source(method, manifest, way=5, shot=shot, queries=1, seed=0,
                                    num_frames=encoder.num_frames, image_size=None, features=out, progress=False)
            sources[name, shot] = method, source
            evaluate(method, source, episodes=20, progress=False)  # warm-up
            began, cpu = time.perf_counter(), time.process_time()
            evaluate(method, source, episodes=episodes, progress=False)
            record["rates"][f"{name}/{shot}"] = (episodes / (time.perf_counter() - began),
                                                 episodes / max(1e-9, time.process_time() - cpu))
            print(f"  {record['commit']}: {name} {shot}-shot {record['rates'][f'{name}/{shot}'][0]:.0f} ep/s",
                  file=sys.stderr, flush=True)
    record["uptime_after"] = _uptime()
    if profile_episodes and hasattr(sources["fsar-llava", 1][0], "predict_episodes"):
        record["levers"] = {shot: _levers(*sources["fsar-llava", shot]) for shot in (1, 5)}
    if profile_episodes:
        method, source = sources["fsar-llava", 1]
        profiler = cProfile.Profile()
        profiler.enable()
        evaluate(method, source, episodes=profile_episodes, progress=False)
        profiler.disable()
        stats = pstats.Stats(profiler)
        record["profile"] = {"episodes": profile_episodes, "total": stats.total_tt,
                             "by_function": _cumulative(stats), "own": _own(stats, 10)}
    return record


def _levers(method, source, episodes: int = 128) -> dict[str, float]:
    """Milliseconds of the method's forward per episode (loading excluded) on the same ``episodes``:
    the plain path (rows unnamed: no per-clip memory), the memo one episode at a time, and batched
    (``predict_episodes``, chunks of 8 and 32); the memo filled first, as late in an evaluation."""
    from dataclasses import replace

    hidden = [replace(source.sample(i, train=False), query_labels=None) for i in range(episodes)]
    method.eval()
    out = {}
    with torch.no_grad():
        method.predict_episodes(hidden)  # fill the memo: every clip of these episodes seen
        runs = {
            "plain path (no per-clip memory)": lambda: [method(replace(e, cached_rows=None)) for e in hidden],
            "per-clip memory, one episode a call": lambda: [method(e) for e in hidden],
            "per-clip memory, chunks of 8": lambda: [method.predict_episodes(hidden[i:i + 8]) for i in range(0, episodes, 8)],
            "per-clip memory, chunks of 32": lambda: [method.predict_episodes(hidden[i:i + 32])
                                                      for i in range(0, episodes, 32)],
        }
        for label, run in runs.items():
            start = time.process_time()
            run()
            out[label] = 1e3 * (time.process_time() - start) / episodes
    return out


#: where an episode's time goes: cumulative seconds of these functions (nested groups indented);
#: (module, qualified name) of a Python function, or (None, name) of a built-in (its own time)
PROFILE_GROUPS = (
    ("evaluate (the whole loop)", "fsar.engine.evaluate", "evaluate"),
    ("  episode loading from the cache (FeatureCache.load_episode)", "fsar.encoders.cache.store",
     "FeatureCache.load_episode"),
    ("  fsar-llava on chunks of episodes (FSARLLaVA._predict_memoised)", "fsar.methods.fsar_llava",
     "FSARLLaVA._predict_memoised"),
    ("    ClipMemo._resolve: finding the rows, computing the misses", "fsar.methods.memo", "ClipMemo._resolve"),
    ("      MFEM, once per clip (in the misses)", "fsar.methods.fsar_llava", "MFEM.forward"),
    ("    prototype means from the memo's tables (embedding_bag)", None, "<built-in method torch.embedding_bag>"),
    ("    query rows from the memo's tables (index_select)", None, "<method 'index_select' of 'torch._C.TensorBase' objects>"),
    ("    CTPC attention over the prototypes (attend_projected)", "fsar.methods.fsar_llava",
     "_SetAttention.attend_projected"),
    ("    MPMM: cues, OTAM kernel, fusion (match_episodes)", "fsar.metrics.mpmm", "MPMM.match_episodes"),
)


def _cumulative(stats) -> dict[str, float]:
    import importlib

    out = {}
    for label, module, qualified in PROFILE_GROUPS:
        if module is None:
            out[label] = sum(own for (file, _, name), (_, _, own, _, _) in stats.stats.items()
                             if file == "~" and name == qualified)
            continue
        target = importlib.import_module(module)
        try:
            for part in qualified.split("."):
                target = getattr(target, part)
        except AttributeError:  # not in this tree
            continue
        code = target.__code__
        key = (code.co_filename, code.co_firstlineno, code.co_name)
        out[label] = stats.stats[key][3] if key in stats.stats else 0.0
    return out


def _own(stats, top: int) -> list[tuple[str, int, float]]:
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:top]
    return [(f"{Path(file).name}:{line}({name})" if file != "~" else name, calls, own)
            for (file, line, name), (_, calls, own, _, _) in rows]


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _commit(src: Path) -> str:
    marker = src / "COMMIT"
    if marker.is_file():
        return marker.read_text().strip()
    return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                          cwd=src).stdout.strip() or "?"


def _export(ref: str, work: Path) -> Path:
    """``git archive`` of ``ref`` under WORK/tree-REF (throughput.py's export); returns the tree."""
    from throughput import _export as export_src  # this folder: the same export, which returns tree/src

    return export_src(ref, work).parent


def part_speed(work: Path, episodes: int, before: str | None, threads: int | None, profile_episodes: int) -> None:
    """Episodes per second from the cache (issue 16's target), at the real model's stream widths.

    A random Video-LLaVA with one decoder layer of the real width (4096) and the real vision
    width (1024) but 5 tokens per frame (28 px frames, 14 px patches): extraction stays cheap,
    and every stream the method reads has the real model's shape (features (T, 4096), prompt and
    label states 4096, vision tower (T, 1024)). The methods use their default sizes; untrained.
    Each code tree (this one, and ``before``) is measured in a fresh process on the same cache.
    """
    print("## 4. Episodes per second from the cache, streams of the real widths (random weights)\n")
    start = time.perf_counter()
    manifest, _, _ = speed_setup(work)
    print(f"cache: {len(manifest.clips)} clips ({time.perf_counter() - start:.0f} s to set up or reopen)\n")
    trees = [("after", Path(__file__).resolve().parents[1])]
    if before:
        trees.insert(0, ("before", _export(before, work)))
    records = {}
    for label, tree in trees:
        command = [sys.executable, str(Path(__file__).resolve()), "--speed-measure", "--work", str(work),
                   "--speed-episodes", str(episodes), "--profile-episodes", str(profile_episodes if label == "after" else 0)]
        if threads:
            command += ["--threads", str(threads)]
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
        records[label] = json.loads(done.stdout.strip().splitlines()[-1])
    head = "| method | trainable |" + "".join(f" {label} ({records[label]['commit']}): {shot}-shot ep/s |"
                                              for shot in (1, 5) for label in records)
    print(head + "\n|---|---:|" + "---:|" * (2 * len(records)))
    for name in SPEED_METHODS:
        cells = [f"{records[label]['rates'][f'{name}/{shot}'][0]:.0f} ({records[label]['rates'][f'{name}/{shot}'][1]:.0f})"
                 for shot in (1, 5) for label in records]
        print(f"| {name} | {records['after']['trainable'][name]:,} | " + " | ".join(cells) + " |")
    print(f"\n{episodes} 5-way episodes per figure, 1 query per class: episodes per wall second (per CPU second "
          "of the process).")
    for label, record in records.items():
        print(f"- {label} ({record['commit']}): {record['threads']} torch thread(s); before: `{record['uptime_before']}`; "
              f"after: `{record['uptime_after']}`")
    levers = records["after"].get("levers")
    if levers:
        print("\nfsar-llava's forward alone (loading excluded), CPU ms per episode on the same 128 episodes, "
              "the memo filled first:\n")
        print("| path | 1-shot | 5-shot |\n|---|---:|---:|")
        for label in levers["1"]:
            print(f"| {label} | {levers['1'][label]:.2f} | {levers['5'][label]:.2f} |")
    profile = records["after"].get("profile")
    if profile:
        n = profile["episodes"]
        print(f"\nWhat remains: cProfile of {n} fsar-llava 1-shot episodes ({records['after']['commit']}), "
              f"{profile['total']:.2f} s under the profiler ({1e3 * profile['total'] / n:.2f} ms an episode):\n")
        print("| where (cumulative, nested groups indented) | s | ms / episode |\n|---|---:|---:|")
        for label, seconds in profile["by_function"].items():
            print(f"| {label.replace('  ', '&nbsp;&nbsp;')} | {seconds:.2f} | {1e3 * seconds / n:.3f} |")
        print("\nTop functions by own time:\n\n| function | calls | own s |\n|---|---:|---:|")
        for function, calls, own in profile["own"]:
            print(f"| `{function}` | {calls} | {own:.2f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="params,extract,accuracy", help="any of params,extract,accuracy,speed")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: 2 for params/extract/accuracy; fsar's own choice "
                             "from the free cores for speed)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--speed-episodes", type=int, default=2000, help="episodes per figure of --parts speed")
    parser.add_argument("--profile-episodes", type=int, default=2000,
                        help="episodes of the --parts speed profile of what remains (0: none)")
    parser.add_argument("--before", default=None, metavar="REF",
                        help="--parts speed: also measure this git commit (exported with git archive)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the set-up here and reuse it (default: a temporary folder)")
    parser.add_argument("--speed-measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed_measure:  # one code tree (PYTHONPATH) in this process; JSON on the last line
        try:
            from fsar.engine.threads import configure_threads
        except ImportError:  # a tree from before fsar chose threads itself
            configure_threads = None
        if configure_threads is not None:
            configure_threads(args.threads)
        elif args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(speed_measure(args.work, args.speed_episodes, args.profile_episodes)))
        return
    torch.set_num_threads(args.threads or 2)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}; torch {torch.__version__}; threads {args.threads or 2} (speed: "
          f"{args.threads or 'fsar’s choice'}); load {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} "
          f"{os.getloadavg()[2]:.1f} (1/5/15 min)\n")
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="fsar-llava-bench-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        if "params" in parts:
            part_params()
        if "extract" in parts:
            part_extract(work, args.repeats)
        if "accuracy" in parts:
            part_accuracy(work, args.episodes, args.train_steps)
        if "speed" in parts:
            part_speed(work, args.speed_episodes, args.before, args.threads, args.profile_episodes)


if __name__ == "__main__":
    main()
