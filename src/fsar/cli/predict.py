"""``fsar predict``: a few labelled clips per new action in, ranked labels with probabilities out.

    fsar predict --data DIR --query FILE... [--checkpoint RUN_DIR] [--reject off|auto|P] [--explain OUT.png] [--json PATH|-]
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
    add_threads,
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

Probabilities are the method's after temperature scaling fitted on the support set by
leave-one-out (the ranking is the method's own). --reject auto|P answers "none of these" when
the top probability is below P (auto: a threshold derived from the support set alone; the rule
is in the README). --explain OUT.png draws the query, the best-matching support clip of each
top action, the alignment the metric found and the per-action scores. Encoded support clips
are kept in --cache (keyed by backbone, weights, frames and the clip's content), so a second
run encodes only new clips.

examples:
  fsar predict --data my_actions/ --query clip1.mp4 clip2.mp4 --checkpoint fsar-demo/run
  fsar predict --data my_actions/ --query clip.mp4 --reject auto --explain why.png
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
    parser.add_argument("--reject", default="off", metavar="off|auto|P",
                        help="'none of these' when the top probability is below P; auto: P from the support set "
                             "(leave-one-out); default off")
    parser.add_argument("--explain", metavar="OUT.png",
                        help="draw what the method matched (OUT-1.png, OUT-2.png ... for several queries)")
    parser.add_argument("--cache", metavar="DIR",
                        help="encoded-clip store (default $FSAR_CACHE or ~/.cache/fsar/clips)")
    parser.add_argument("--no-cache", action="store_true", help="encode every clip again, store nothing")
    add_device(parser)
    add_methods_own_options(parser)
    add_threads(parser)
    parser.set_defaults(func=run)


def load_support(directory):
    """{action: clip paths} of a support folder; bad folders are a CLIError naming the problem."""
    from fsar.recognizer import SupportSetError, support_folder

    try:
        return support_folder(directory)
    except SupportSetError as error:
        raise CLIError(f"--data {error}") from None


def explain_paths(out: str, count: int) -> list[str]:
    """OUT.png for one query; OUT-1.png, OUT-2.png ... for several."""
    from pathlib import Path

    path = Path(out)
    if count == 1:
        return [str(path)]
    return [str(path.with_name(f"{path.stem}-{i}{path.suffix or '.png'}")) for i in range(1, count + 1)]


def run(args: argparse.Namespace) -> int:
    """A thin layer over :class:`fsar.Recognizer`: build it from --data, predict, print."""
    from fsar.data.video import VideoReadError, open_video
    from fsar.recognizer import Recognizer, RecognizerError, parse_reject

    try:
        reject = parse_reject(args.reject)
    except RecognizerError as error:
        raise CLIError(f"--reject: {error}") from None
    root = data_root(args)
    load_support(root)  # the folder's problems, named as --data
    for query in args.query:  # before any model is built
        try:
            open_video(query)
        except VideoReadError as error:
            raise CLIError(f"--query {query} is not a readable video: {error.reason}") from None
    device = resolve_device(args.device)
    if args.checkpoint and args.method_options:
        raise CLIError("-O applies without --checkpoint only (a checkpoint rebuilds its own method)")
    try:
        recognizer = Recognizer.from_folder(
            root, method=args.method, backbone=args.backbone, checkpoint=args.checkpoint, weights=args.weights,
            method_options=method_options_dict(args) or None, method_args=method_args_from(args),
            num_frames=args.num_frames, image_size=args.image_size,
            cache_dir=False if args.no_cache else args.cache, reject=reject, device=device,
        )
        predictions = recognizer.predict(list(args.query))
        pictures = []
        if args.explain:
            for query, path in zip(args.query, explain_paths(args.explain, len(args.query))):
                pictures.append(str(recognizer.explain(query).save(path)))
        calibration = recognizer.calibration()
        threshold = recognizer.threshold()
    except RecognizerError as error:
        raise CLIError(str(error)) from None
    from fsar.engine.run import inference_tags, tags_label

    info = recognizer.info
    tags = inference_tags(recognizer.method)  # e.g. clip-spm's PADM mode
    top = args.top if args.top > 0 else len(recognizer.actions)
    record = {
        "method": info["method"], "inference": tags, "backbone": info["backbone"], "checkpoint": args.checkpoint,
        "support": str(root), "shots": recognizer.shots(), "reject": reject, "threshold": threshold,
        "calibration": {"temperature": calibration.temperature, "rule": calibration.rule,
                        "auto_threshold": calibration.threshold,
                        "leave_one_out_accuracy": calibration.leave_one_out_accuracy},
        "predictions": [p.to_dict(top) for p in predictions], "explanations": pictures,
    }
    if emit_json(args.json, record):
        return 0
    shots = recognizer.shots()
    print(f"{info['method']}{tags_label(tags)} ({info['backbone']}); support: {len(shots)} actions, {sum(shots.values())} clips; "
          f"reject {'off' if threshold is None else f'below {threshold:.0%}'}")
    for prediction in predictions:
        verdict = (f"none of these (best {prediction.best} {prediction.score:.2%})" if prediction.rejected
                   else f"{prediction.label} ({prediction.score:.2%})")
        print(f"{prediction.query}: {verdict}")
        for rank, (name, probability) in enumerate(prediction.ranking[:top], start=1):
            print(f"  {rank:2d}. {probability:7.2%}  {name}")
    for picture in pictures:
        print(f"explanation: {picture}")
    if args.json:
        print(f"predictions: {args.json}")
    return 0
