"""``fsar predict``: a few labelled clips per new action in, ranked labels with probabilities out.

    fsar predict --support DIR --query FILE... [--checkpoint RUN_DIR] [--reject off|auto|P] [--explain OUT.png] [--json]
"""

from __future__ import annotations

import argparse

from fsar.cli import CLIError

ORDER = 30

DEFAULT_METHOD = "otam"
DEFAULT_BACKBONE = "effnet-lite0+minilm"

EPILOG = f"""\
DIR holds one folder per action, each with a few example clips (video files or frame
folders), as in the data layer: DIR/<action name>/<clip>. Every query is scored against all
actions of DIR at once; the output lists each query's actions from most to least likely with
the method's probabilities (they sum to 1 over the actions of DIR).

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
  fsar predict --support my_actions/ --query clip1.mp4 clip2.mp4 --checkpoint fsar-demo/run
  fsar predict --support my_actions/ --query clip.mp4 --reject auto --explain why.png
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="rank the actions of a support folder for query clips",
        description="Recognise query clips among the actions of a folder of a few labelled clips each.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--support", required=True, metavar="DIR", help="DIR/<action>/<clip>: a few clips per action")
    parser.add_argument("--query", required=True, nargs="+", metavar="FILE", help="query clips (video files or frame folders)")
    parser.add_argument("--checkpoint", metavar="RUN_DIR", help="run directory of `fsar train` (or its best.json)")
    parser.add_argument("--method", help=f"method without --checkpoint (default {DEFAULT_METHOD})")
    parser.add_argument("--backbone", help=f"backbone without --checkpoint (default {DEFAULT_BACKBONE})")
    parser.add_argument("--weights", metavar="W", help="backbone weights (folder, hub id, 'random')")
    parser.add_argument("--frames", type=int, help="frames per clip T (default: the checkpoint's, else 8)")
    from fsar.cli._engine_args import parse_option

    parser.add_argument("--option", "-O", dest="method_options", action="append", type=parse_option,
                        metavar="KEY=VALUE", help="method option (repeatable), without --checkpoint")
    parser.add_argument("--top", type=int, default=0, metavar="K", help="print only the K most likely actions")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--reject", default="off", metavar="off|auto|P",
                        help="'none of these' when the top probability is below P; auto: P from the support set "
                             "(leave-one-out); default off")
    parser.add_argument("--explain", metavar="OUT.png",
                        help="draw what the method matched (OUT-1.png, OUT-2.png ... for several queries)")
    parser.add_argument("--cache", metavar="DIR",
                        help="encoded-clip store (default $FSAR_CACHE or ~/.cache/fsar/clips)")
    parser.add_argument("--no-cache", action="store_true", help="encode every clip again, store nothing")
    from fsar.lga.describe import add_describer_arguments

    # --descriptions CACHE.json and the --llm-* flags that fill missing entries (method lga).
    add_describer_arguments(parser)
    parser.set_defaults(func=run)


def load_support(directory):
    """{action: clip paths} of a support folder; bad folders are a CLIError naming the problem."""
    from fsar.recognizer import SupportSetError, support_folder

    try:
        return support_folder(directory)
    except SupportSetError as error:
        raise CLIError(f"--support {error}") from None


def explain_paths(out: str, count: int) -> list[str]:
    """OUT.png for one query; OUT-1.png, OUT-2.png ... for several."""
    from pathlib import Path

    path = Path(out)
    if count == 1:
        return [str(path)]
    return [str(path.with_name(f"{path.stem}-{i}{path.suffix or '.png'}")) for i in range(1, count + 1)]


def run(args: argparse.Namespace) -> int:
    """A thin layer over :class:`fsar.Recognizer`: build it from --support, predict, print."""
    import json

    from fsar.recognizer import Recognizer, RecognizerError, parse_reject

    try:
        reject = parse_reject(args.reject)
    except RecognizerError as error:
        raise CLIError(f"--reject: {error}") from None
    load_support(args.support)  # the folder's problems, named as --support
    from fsar.data.video import VideoReadError, open_video

    for query in args.query:  # before any model is built
        try:
            open_video(query)
        except VideoReadError as error:
            raise CLIError(f"--query {query} is not a readable video: {error.reason}") from None
    try:
        recognizer = Recognizer.from_folder(
            args.support, method=args.method, backbone=args.backbone, checkpoint=args.checkpoint,
            weights=args.weights, method_options=dict(args.method_options or []) or None,
            descriptions=args.descriptions, num_frames=args.frames,
            cache_dir=False if args.no_cache else args.cache, reject=reject, args=args,
        )
        predictions = recognizer.predict(list(args.query))
        pictures = []
        if args.explain:
            for query, path in zip(args.query, explain_paths(args.explain, len(args.query))):
                pictures.append(str(recognizer.explain(query).save(path)))
        calibration = recognizer.calibration()
    except RecognizerError as error:
        raise CLIError(str(error)) from None
    info = recognizer.info
    top = args.top if args.top > 0 else len(recognizer.actions)
    threshold = recognizer.threshold()
    if args.json:
        print(json.dumps({
            "method": info["method"], "backbone": info["backbone"], "checkpoint": args.checkpoint,
            "support": str(args.support), "shots": recognizer.shots(), "reject": reject, "threshold": threshold,
            "calibration": {"temperature": calibration.temperature, "rule": calibration.rule,
                            "auto_threshold": calibration.threshold,
                            "leave_one_out_accuracy": calibration.leave_one_out_accuracy},
            "predictions": [p.to_dict(top) for p in predictions], "explanations": pictures,
        }, indent=2))
        return 0
    shots = recognizer.shots()
    print(f"{info['method']} ({info['backbone']}); support: {len(shots)} actions, {sum(shots.values())} clips; "
          f"reject {'off' if threshold is None else f'below {threshold:.0%}'}")
    for prediction in predictions:
        verdict = (f"none of these (best {prediction.best} {prediction.score:.2%})" if prediction.rejected
                   else f"{prediction.label} ({prediction.score:.2%})")
        print(f"{prediction.query}: {verdict}")
        for rank, (name, probability) in enumerate(prediction.ranking[:top], start=1):
            print(f"  {rank:2d}. {probability:7.2%}  {name}")
    for picture in pictures:
        print(f"explanation: {picture}")
    return 0
