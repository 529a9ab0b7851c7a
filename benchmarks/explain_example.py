"""The explanation pictures of ``benchmarks/README.md``: ``Recognizer.explain`` on the synthetic
held-out actions with the embedded backbone, for OTAM (its path) and LGA (stages, with the
synthetic set's own stage descriptions; untrained, so its scores mean nothing, the picture
shows what it draws).

    python benchmarks/explain_example.py            # writes benchmarks/explain_otam.png, explain_lga.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/tmp/fsar-open-set", help="synthetic clips + clip cache (shared with open_set.py)")
    parser.add_argument("--out", default=str(Path(__file__).parent))
    parser.add_argument("--methods", nargs="+", default=["otam", "lga"])
    args = parser.parse_args()
    from fsar import Recognizer
    from fsar.data.synth import default_split, render_dataset
    from fsar.engine.run import build_method

    _, val, test = default_split()
    held_out = val + test
    root = render_dataset(Path(args.data) / "synth", classes=held_out, videos_per_class=6, frames=16, size=112,
                          progress=False)
    descriptions = json.loads((root / "synth.json").read_text())["descriptions"]
    actions = test[:5]
    support = {name: sorted((root / name).glob("*.mp4"))[:3] for name in actions}
    query = sorted((root / actions[0]).glob("*.mp4"))[4]
    for name in args.methods:
        torch.manual_seed(0)
        options = {"descriptions": {a: descriptions[a] for a in actions}} if name == "lga" else {}
        method = build_method(name, backbone="effnet-lite0+minilm", method_options=options)
        recognizer = Recognizer.from_method(method, support, num_frames=8, cache_dir=Path(args.data) / "cache",
                                            reject="auto", device="cpu", info={"method": name})
        explanation = recognizer.explain(query, top=3, name=f"{query.name} (a clip of '{actions[0]}')")
        path = explanation.save(Path(args.out) / f"explain_{name}.png")
        print(f"{name}: {explanation.prediction.label} ({explanation.prediction.score:.0%}) -> {path}")


if __name__ == "__main__":
    main()
