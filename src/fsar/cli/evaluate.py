"""``fsar eval``: accuracy ± 95% interval over seeded episodes, per-class accuracy, confusion matrix.

    fsar eval --data ROOT [--split-file F] --method M --backbone B [--checkpoint RUN_DIR]
              --way 5 --shot 1 --queries 1 --episodes N --seed S --json OUT.json [--png OUT.png]
"""

from __future__ import annotations

import argparse

from fsar.cli import CLIError
from fsar.cli._args import add_command, add_json, emit_json
from fsar.cli._engine_args import add_common, resolve, user_errors

ORDER = 20

EPILOG = """\
The episodes are a pure function of (--seed, episode index): every method evaluated with the
same data, way/shot/queries and seed sees the same tasks. The accuracy is the mean of the
per-episode accuracies, with ci95 = 1.96 * std / sqrt(episodes) (population std, as in the
OTAM/TRX/CLIP-FSAR evaluation code); both are fractions in the JSON.

With --checkpoint RUN_DIR the trained method is rebuilt from the run's saved config (its
best.json, or last.json when the run had no validation) and --method/--backbone, if given,
must match it. Without it, training-free methods (proto, otam, bimhm, zero-shot) evaluate
directly; trainable ones run untrained (a warning says so).

The JSON holds method, backbone, way, shot, queries, episodes, seed, accuracy, ci95, std,
per_class_accuracy, confusion_matrix (rows: true class, columns: predicted), class_names,
skipped_clips, checkpoint, the resolved config and the fsar version. --png draws per-class
accuracy and the confusion matrix.

examples:
  fsar eval --data synth/ --method otam --backbone effnet-lite0+minilm --episodes 1000 --json otam.json
  fsar eval --data ssv2/ --split-file splits/ssv2_CMN/test.txt --checkpoint runs/ssv2-ma \\
      --episodes 10000 --seed 0 --json ma.json --png ma.png
"""


def add_parser(subparsers) -> None:
    parser = add_command(
        subparsers, "eval",
        help="evaluate a method on seeded episodes: accuracy ± 95%% CI, per class, confusion",
        description="Evaluate a few-shot method on M-way K-shot episodes of a data set.",
        epilog=EPILOG,
    )
    add_common(parser, what="evaluation")
    parser.add_argument(
        "--split", "--split-file", dest="split_file", metavar="NAME[:PART]|F",
        help="evaluation split: a shipped benchmark (its test part; NAME:val for another; fsar data splits) "
             "or a split file (label/video_id per line)",
    )
    parser.add_argument(
        "--compare", nargs="+", metavar="RESULT.json",
        help="results of `fsar eval --json` on the same episodes: print the paired difference to each "
             "(95%% interval, sign test, bootstrap p)",
    )
    parser.add_argument("--classnames-file", metavar="F", help="class names of anonymised split labels (SSv2-Full)")
    parser.add_argument("--checkpoint", metavar="RUN_DIR", help="run directory of `fsar train` (or its best.json/last.json)")
    add_json(parser, what="the result")
    parser.add_argument("--png", metavar="OUT.png", help="draw per-class accuracy and the confusion matrix here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from fsar.engine.config import EvalConfig
    from fsar.engine.run import run_evaluation

    to_stdout = args.json == "-"
    config = resolve(_without_json(args) if to_stdout else args, EvalConfig)
    if to_stdout:
        config = dataclasses.replace(config, json=None)
    try:
        outcome = run_evaluation(config)
    except user_errors() as error:
        raise CLIError(str(error)) from None
    if to_stdout:
        emit_json("-", outcome.record)
        return 0
    result, used = outcome.result, outcome.config
    from fsar.engine.run import tags_label

    print(
        f"{used.method}{tags_label(outcome.record.get('inference') or {})} ({used.backbone}) {used.way}-way {used.shot}-shot: "
        f"{100 * result.accuracy:.2f} ± {100 * result.ci95:.2f}% (95% CI, {result.episodes} episodes, seed {used.seed})"
    )
    if used.json:
        print(f"result: {used.json}")
    if args.compare:
        _compare(outcome.record, args.compare, name=f"{used.method}")
    return 0


def _compare(record: dict, paths: list[str], *, name: str) -> None:
    """Pair this result with earlier ones on the same episodes (fsar.engine.compare)."""
    import json
    from pathlib import Path

    from fsar.engine.compare import ComparisonError, check_same_episodes, compare_paired, comparison_markdown

    others: dict[str, dict] = {}
    for path in paths:
        try:
            other = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise CLIError(f"--compare {path}: cannot read the result ({error})") from None
        label = f"{other.get('method', '?')} ({path})"
        others[label] = other
    labels = {f"{name} (this run)": record, **others}
    try:
        check_same_episodes(labels)
        comparisons = [compare_paired(record["episode_accuracies"], other["episode_accuracies"],
                                      name_a=f"{name} (this run)", name_b=label)
                       for label, other in others.items()]
    except ComparisonError as error:
        raise CLIError(str(error)) from None
    print()
    print(comparison_markdown(comparisons, title="paired comparison on the same episodes"))


def _without_json(args: argparse.Namespace) -> argparse.Namespace:
    """``--json -`` prints the record; the engine then writes no file."""
    return argparse.Namespace(**{**vars(args), "json": None})
