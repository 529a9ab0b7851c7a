"""``fsar predict``: a few labelled clips per new action in, ranked labels with probabilities out.

    fsar predict --data DIR --query FILE... [--checkpoint RUN_DIR] [--json PATH|-]
"""

from __future__ import annotations

import argparse

from fsar.cli import CLIError
from fsar.cli._args import (
    add_command,
    add_data,
    add_device,
    add_json,
    add_method_option_flag,
    add_methods_own_options,
    add_sampling,
    data_root,
    emit_json,
    method_args_from,
    method_options_dict,
    resolve_device,
)

ORDER = 30

DEFAULT_METHOD = "otam"
DEFAULT_BACKBONE = "effnet-lite0+minilm"

EPILOG = f"""\
--data ROOT holds one folder per action, each with a few example clips (video files or frame
folders), as in the data layer: ROOT/<action name>/<clip>. Every query is scored against all
actions of ROOT at once; the output lists each query's actions from most to least likely with
the method's probabilities (they sum to 1 over the actions of ROOT).

With --checkpoint RUN_DIR the trained method of `fsar train` is used; without it, the
training-free --method (default {DEFAULT_METHOD}) on --backbone (default {DEFAULT_BACKBONE}).
An action folder without a readable clip, or a query that is not a readable video, is an
error naming the file.

example:
  fsar predict --data my_actions/ --query clip1.mp4 clip2.mp4 --checkpoint fsar-demo/run
"""


def add_parser(subparsers) -> None:
    parser = add_command(
        subparsers, "predict",
        help="rank the actions of a support folder for query clips",
        description="Recognise query clips among the actions of a folder of a few labelled clips each.",
        epilog=EPILOG,
    )
    add_data(parser, required=True, legacy_flags=("--support",),
             help="DIR/<action>/<clip>: a few example clips per action (the support set)")
    parser.add_argument("--query", required=True, nargs="+", metavar="FILE", help="query clips (video files or frame folders)")
    parser.add_argument("--checkpoint", metavar="RUN_DIR", help="run directory of `fsar train` (or its best.json)")
    parser.add_argument("--method", help=f"method without --checkpoint (default {DEFAULT_METHOD})")
    parser.add_argument("--backbone", help=f"backbone without --checkpoint (default {DEFAULT_BACKBONE})")
    parser.add_argument("--weights", metavar="W", help="backbone weights (folder, hub id, 'random')")
    add_method_option_flag(parser)
    add_sampling(parser)
    parser.add_argument("--top", type=int, default=0, metavar="K", help="print only the K most likely actions")
    add_json(parser, what="the ranked predictions", bare_prints=True)
    add_device(parser)
    add_methods_own_options(parser)
    parser.set_defaults(func=run)


def load_support(directory):
    """The support manifest; a class folder with zero usable clips is an error naming it."""
    from pathlib import Path

    from fsar.data.manifest import Manifest, ManifestError

    directory = Path(directory)
    try:
        manifest = Manifest.from_folder(directory)
    except (ManifestError, FileNotFoundError, NotADirectoryError) as error:
        raise CLIError(f"--data {directory}: {error}") from None
    empty = [name for name, count in manifest.counts().items() if count == 0]
    if empty:
        reasons = [f"{s.path.name}: {s.reason}" for s in manifest.skipped if s.class_name in empty][:3]
        raise CLIError(
            f"--data {directory}: action folder(s) {', '.join(repr(str(directory / n)) for n in empty)} "
            f"hold no readable clip" + (f" ({'; '.join(reasons)})" if reasons else "")
        )
    if len(manifest.classes) < 2:
        raise CLIError(f"--data {directory}: needs at least 2 action folders, found {len(manifest.classes)}")
    return manifest


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from fsar.cli._engine_args import user_errors
    from fsar.data.inputs import EpisodeInputs
    from fsar.data.manifest import Clip
    from fsar.data.video import VideoReadError, open_video
    from fsar.engine.checkpoint import read_checkpoint
    from fsar.engine.run import build_method, method_from_checkpoint
    from fsar.engine.sources import loader_for

    support = load_support(data_root(args))
    queries = []
    for name in args.query:
        path = Path(name)
        try:
            open_video(path)
        except VideoReadError as error:
            raise CLIError(f"--query {path} is not a readable video: {error.reason}") from None
        queries.append(Clip(path, -1, "?"))
    num_frames, image_size = args.num_frames, args.image_size
    device = resolve_device(args.device)
    method_args = method_args_from(args)
    try:
        if args.checkpoint:
            if args.method_options:
                raise CLIError("-O applies without --checkpoint only (a checkpoint rebuilds its own method)")
            checkpoint = read_checkpoint(args.checkpoint)
            method, saved = method_from_checkpoint(
                checkpoint, method=args.method, backbone=args.backbone, class_names=support.classes,
                method_args=method_args,
            )
            num_frames, image_size = num_frames or saved.num_frames, image_size or saved.image_size
            name, backbone = saved.method, saved.backbone
        else:
            name, backbone = args.method or DEFAULT_METHOD, args.backbone or DEFAULT_BACKBONE
            method = build_method(name, backbone=backbone, weights=args.weights,
                                  method_options=method_options_dict(args), method_args=method_args,
                                  class_names=support.classes)
    except user_errors() + (ValueError,) as error:
        raise CLIError(str(error)) from None
    method.eval().to(device)
    loader = loader_for(method.encoder, num_frames=num_frames or 8, image_size=image_size)
    clips = [c for c in support.clips]  # class-major, labels = index in support.classes
    try:
        inputs = EpisodeInputs(
            support=torch.stack([loader.load(c, train=False) for c in clips]),
            support_labels=torch.tensor([c.label for c in clips]),
            query=torch.stack([loader.load(q, train=False) for q in queries]),
            class_names=list(support.classes),
        )
    except VideoReadError as error:
        raise CLIError(str(error)) from None
    with torch.no_grad():
        probabilities = method(inputs.to(device)).log_probs.float().exp().cpu()
    top = args.top if args.top > 0 else len(support.classes)
    results = []
    for query, row in zip(queries, probabilities):
        order = row.argsort(descending=True)[:top].tolist()
        results.append({
            "query": str(query.path),
            "ranking": [{"class": support.classes[i], "probability": round(float(row[i]), 6)} for i in order],
        })
    record = {"method": name, "backbone": backbone, "checkpoint": args.checkpoint,
              "support": str(args.data), "shots": support.counts(), "predictions": results}
    if emit_json(args.json, record):
        return 0
    print(f"{name} ({backbone}); support: {len(support.classes)} actions, {len(clips)} clips")
    for result in results:
        print(result["query"])
        for rank, item in enumerate(result["ranking"], start=1):
            print(f"  {rank:2d}. {item['probability']:7.2%}  {item['class']}")
    if args.json:
        print(f"predictions: {args.json}")
    return 0
