"""Class-distinguishable mp4 clips for the app tests (a colour and a motion per class, plus noise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: a CLIP ViT of a few thousand parameters (random weights), frozen: the app's model in tests
TINY_OPTIONS = {"encoder_options": {"image_size": 32, "patch_size": 16, "width": 32, "vision_layers": 1, "heads": 2,
                                    "text_width": 32, "text_layers": 1, "text_heads": 2, "projection_dim": 16,
                                    "vocab_size": 64}, "finetune": "frozen"}
TINY_FLAGS = ["--method", "otam", "--backbone", "clip-vit-b32", "--weights", "random", "--frames", "4",
              "-O", "finetune=frozen", "-O",
              "encoder_options={image_size: 32, patch_size: 16, width: 32, vision_layers: 1, heads: 2, "
              "text_width: 32, text_layers: 1, text_heads: 2, projection_dim: 16, vocab_size: 64}"]
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}


def write_clip(path: Path, colour, *, seed: int, frames: int = 8, size: int = 32) -> Path:
    import av

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(frames):
            image = np.zeros((size, size, 3)) + np.array(colour, dtype=np.float64)
            x = (3 * k) % size
            image[:, x : x + 4] = 255 - np.array(colour)
            image += rng.normal(0, 12, image.shape)
            frame = av.VideoFrame.from_ndarray(image.clip(0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_clips(root: Path, *, clips: int = 3) -> dict[str, list[Path]]:
    """``root/<colour>/clip<j>.mp4`` for every colour of :data:`COLOURS`."""
    out = {}
    for c, (name, colour) in enumerate(COLOURS.items()):
        out[name] = [write_clip(root / name / f"clip{j}.mp4", colour, seed=10 * c + j) for j in range(clips)]
    return out
