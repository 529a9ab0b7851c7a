"""``fsar extract``: cache per-frame features of a frozen encoder for every clip of a data set.

    fsar extract --data ROOT [--split-file F | --split-file-dir DIR] --backbone effnet-lite0+minilm
                 [--weights W] [-B KEY=VALUE ...] --out DIR [--frames 8] [--image-size PX] [--batch-size N]
                 [--shard-size N]

``-B/--backbone-option KEY=VALUE`` (repeatable, VALUE read as YAML) passes an option the backbone
declares (its factory's ``declared_options``; e.g. ``video-llava``: ``layer=16``, ``layer=0.5``,
``prompts=ssv2``, ``captions=minilm``, ``caption_tokens=16``); an undeclared key is an error that lists
the valid ones. A method reading the cache must build its backbone with the same options
(``-O 'encoder_options={layer: 16}'``); the cache key refuses it otherwise, naming what differs.

``--data``, ``--frames``, ``--image-size`` and ``--split-file-dir`` mean what they mean for
``fsar train`` / ``fsar eval`` (one vocabulary, :mod:`fsar.cli._args`), so a cache extracted with
the same flags serves them (``--features DIR``): the cache holds the evaluation view of the
loader those commands build.

Resumes after an interruption (complete shards are kept); refuses a trainable encoder and a
directory that already holds another backbone's features. See :mod:`fsar.encoders.cache`.
"""

from __future__ import annotations

import argparse

from fsar.cli import CLIError
from fsar.cli._args import add_data, add_device, add_no_progress, add_sampling, add_threads, data_root, resolve_device

ORDER = 40


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="cache per-frame features of a frozen encoder (resumable)",
        description=(
            "Encode the evaluation view (centre TSN frames, centre crop) of every clip once and store "
            "the per-frame features in safetensors shards; methods with a frozen encoder then train and "
            "evaluate from the cache. Re-running after an interruption keeps complete shards."
        ),
    )
    add_data(parser, required=True, legacy_positional=True)
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--split-file", help="split file (label/video_id per line); default: every clip under ROOT")
    split.add_argument("--split-file-dir", metavar="DIR",
                       help="directory of split files, as for `fsar train`: extracts each of its train.txt, "
                            "val.txt and test.txt into the cache")
    parser.add_argument("--classnames-file", help="class names for anonymised split labels (SSv2-Full)")
    parser.add_argument("--backbone", default="effnet-lite0+minilm", help="registered backbone (default: %(default)s)")
    parser.add_argument("--weights", default=None, help="backbone weights (folder, hub id, or 'random')")
    parser.add_argument(
        "-B", "--backbone-option", dest="backbone_options", action="append", metavar="KEY=VALUE",
        help="backbone option (repeatable, VALUE read as YAML), one the backbone declares, e.g. for "
        "video-llava: -B layer=16 (or 0.5 of the depth) -B prompts=ssv2 -B captions=minilm -B caption_tokens=16",
    )
    parser.add_argument("--out", required=True, help="cache directory")
    add_sampling(parser, frames=8)  # --frames, --image-size: the same flags as fsar train/eval
    parser.add_argument("--sampling", default="tsn", choices=("tsn", "uniform"), help="frame sampling (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per encoder call (default: %(default)s)")
    parser.add_argument("--shard-size", type=int, default=256, help="clips per shard file (default: %(default)s)")
    add_device(parser)
    add_no_progress(parser)
    add_threads(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fsar.data.loading import ClipLoader
    from fsar.data.manifest import Manifest
    from fsar.data.transforms import TransformConfig
    from fsar.encoders import create_encoder, list_encoders
    from fsar.encoders.cache import CacheMismatchError, extract_features

    root = data_root(args)
    if args.num_frames < 1 or args.batch_size < 1 or args.shard_size < 1:
        raise CLIError("--frames, --batch-size and --shard-size must be >= 1")
    if args.image_size is not None and args.image_size < 1:
        raise CLIError(f"--image-size must be >= 1, got {args.image_size}")
    if args.backbone not in list_encoders():
        raise CLIError(f"unknown backbone {args.backbone!r}; available: {', '.join(list_encoders())}")
    split_files = [args.split_file] if args.split_file else []
    if args.split_file_dir:
        split_files = [Path(args.split_file_dir) / f"{name}.txt" for name in ("train", "val", "test")]
        split_files = [f for f in split_files if f.is_file()]
        if not split_files:
            raise CLIError(f"--split-file-dir {args.split_file_dir}: no train.txt, val.txt or test.txt there")
    try:
        manifests = [
            Manifest.from_split_file(root, f, classnames_file=args.classnames_file, progress=args.progress)
            for f in split_files
        ] or [Manifest.from_folder(root, progress=args.progress)]
    except (ValueError, FileNotFoundError) as error:
        raise CLIError(str(error)) from None
    backbone_options = _backbone_options(args.backbone, args.backbone_options or [])
    try:
        encoder = create_encoder(args.backbone, weights=args.weights, **backbone_options)
    except (ValueError, OSError, TypeError) as error:
        raise CLIError(f"cannot build backbone {args.backbone!r}: {error}") from None
    if not encoder.is_frozen:
        raise CLIError(f"backbone {args.backbone!r} is not frozen; only frozen encoders can be cached")
    encoder = encoder.to(resolve_device(args.device))
    # The loader `fsar train`/`fsar eval` build (fsar.engine.sources.loader_for), with --sampling.
    sizes = {} if args.image_size is None else {"image_size": args.image_size}
    loader = ClipLoader(
        num_frames=args.num_frames, sampling=args.sampling, transform=TransformConfig.for_encoder(encoder, **sizes)
    )
    options = {"weights": args.weights, **backbone_options}
    for split_file, manifest in zip(split_files or [None], manifests):
        try:
            summary = extract_features(
                manifest,
                encoder,
                loader,
                Path(args.out),
                shard_size=args.shard_size,
                batch_size=args.batch_size,
                backbone_options=options,
                progress=args.progress,
            )
        except (CacheMismatchError, ValueError) as error:  # e.g. a backbone that takes another frame count
            raise CLIError(str(error)) from None
        which = f" [{Path(split_file).name}]" if split_file is not None and args.split_file_dir else ""
        print(
            f"{summary.out_dir}{which}: {summary.extracted} clips cached ({summary.shards_written} shards written, "
            f"{summary.shards_reused} reused), {len(summary.skipped)} skipped, "
            f"{summary.clips_per_second:.1f} clips/s"
        )
        for path, reason in summary.skipped[:20]:
            print(f"  skipped {path}: {reason}")
        if len(summary.skipped) > 20:
            print(f"  ... {len(summary.skipped) - 20} more (see {summary.out_dir / 'index.json'})")
    return 0


def _backbone_options(backbone: str, texts: list[str]) -> dict:
    """``-B KEY=VALUE`` texts -> {key: value}, each key one the backbone declares (a CLIError lists them)."""
    from fsar.cli._args import parse_option
    from fsar.encoders import ENCODERS

    declared = dict(getattr(ENCODERS.get(backbone), "declared_options", {}) or {})
    options: dict = {}
    for text in texts:
        key, sep, _ = text.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--backbone-option expects KEY=VALUE, got {text!r}")
        key, value = parse_option(text)
        if key in ("weights", "finetune"):
            raise CLIError(f"--backbone-option {key}: give it as --{key}" if key == "weights"
                           else "--backbone-option finetune: only frozen backbones can be cached")
        if key not in declared:
            valid = ", ".join(f"{k} ({h})" for k, h in declared.items()) or "none"
            raise CLIError(f"--backbone-option {key}: backbone {backbone!r} has no such option; valid: {valid}")
        if key in options:
            raise CLIError(f"--backbone-option {key} given twice")
        options[key] = value
    return options
