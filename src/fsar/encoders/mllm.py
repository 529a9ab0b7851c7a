"""Frozen video MLLMs (Video-LLaVA, ...) as fsar backbones: one generic encoder, one adapter per model family.

A video MLLM turns T frames into visual tokens, writes them into the prompt where its video placeholder
stands, and runs its LLM decoder over the whole sequence. What differs between families (Video-LLaVA,
LLaVA-NeXT-Video, Qwen2-VL) is small and lives in an :class:`MLLMAdapter`:

* how to load the model class (and which classes a folder must hold),
* the visual token layout (:class:`VideoTokenLayout`): how many token *groups* (frames), how many
  tokens per group, how many tokens at the start of each group to *drop* when pooling a group
  (Video-LLaVA: 8 frames x 257 tokens, the first of each frame its class token),
* how frames become projected token embeddings (and, from the same pass, the vision tower's
  penultimate layer),
* the chat format around a user message,
* where a family departs from the LLaVA pattern, a hook: ``frames_per_group`` (Qwen2-VL's 2-frame
  temporal patch), ``position_ids`` (its 3-D M-RoPE), ``generate_inputs``, ``vision_dim``,
  ``check_model`` (the loaded model against its config).

Families here: ``video-llava`` (:mod:`fsar.encoders.video_llava`), ``llava-next-video``,
``qwen2-vl``.

Everything else is generic and here (:class:`VideoMLLMEncoder`): our own expansion of the single
video placeholder into ``layout.total`` copies (checked against the model's visual tokens, never a
silent misalignment), left-padded batches with position ids from the attention mask (so a batch gives
what one-at-a-time gives), lazy loading (the weights load on the first forward; the feature cache's
key needs only the config and the weight files), a shared prefix pass for several prompts over one
video (:meth:`VideoMLLMEncoder._video_forwards`), and the per-clip streams of FSAR-LLaVA (spec ``fsar_llava.md`` section 3):

==================  ===============  ==================================================================
stream              shape            what
==================  ===============  ==================================================================
``features``        (B, T, D)        decoder hidden states of layer l* at the video-token positions,
                                     mean over each frame's tokens (the dropped ones excluded)
``prompt_state``    (B, D)           state at layer l* of the last prompt token (after the video;
                                     it has seen the whole video and the label-free query prompt)
``vision_tower``    (B, T, D_vis)    the vision tower's selected (penultimate) layer, mean over each
                                     frame's patch tokens (the spec's vision-only baseline)
``support_prompt_state`` (B, D)   label-aware, support clips only: the same state under the support
                                     prompt (b) that names the clip's class (``encode_clips(frames,
                                     labels=...)``; the cache extracts it with each clip's class name and
                                     never hands it to a query); off with ``support_prompt=False``
``caption_embedding`` (B, D_cap)    only with ``captions=``: the greedy caption (at most
                                     ``caption_tokens``) embedded by a text encoder (baseline ii)
``label_state``     (N, D)           per class name: the last token's state of the text-only prompt
                                     (c) naming the class, no video (:meth:`encode_class_streams`);
                                     with ``label_templates``, its mean over the 16 MA-FSAR templates
==================  ===============  ==================================================================

D is the decoder width (4096 for Video-LLaVA-7B), l* the resolved layer (an index 1..L, or a
fraction of the depth; default 0.75 -> 24 of 32). The layer L is taken after the final norm.
Prompts are versioned (:class:`MLLMPrompts`); their hash and the layer are part of
:meth:`stream_key`, hence of the feature cache's key.

Leakage: the query prompt never contains label text (it serves every clip's label-free streams); a
class name enters only the support prompt (b) of ``support_prompt_state`` (the clip's own class, a
label-aware stream: :meth:`label_stream_names`, never computed or cached for a query's use), the
text-only prompt (c) of ``label_state`` and the task-oriented query of section 4d, which names only the
episode's candidate classes (:meth:`MLLMPrompts.task_query`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from fsar.encoders.base import Encoder

__all__ = [
    "MLLMAdapter",
    "MLLMError",
    "MLLMPrompts",
    "PROMPT_SETS",
    "VideoMLLMEncoder",
    "VideoTokenLayout",
    "MLLM_OPTIONS",
    "build_mllm_encoder",
    "declared_options",
    "resolve_layer",
]

log = logging.getLogger(__name__)

CLIP_STREAMS = ("prompt_state", "vision_tower")
#: the label-aware clip stream (support prompt (b) naming the clip's class; support clips only)
SUPPORT_STREAM = "support_prompt_state"
#: text encoders of the caption baseline: None (off), the MLLM's own text state, or the embedded MiniLM
CAPTION_ENCODERS = (None, "mllm", "minilm")
CLASS_STREAMS = ("label_state",)


#: What every video-MLLM backbone declares as options (``fsar extract -B KEY=VALUE``), with a line of help.
MLLM_OPTIONS: dict[str, str] = {
    "layer": "decoder layer of the streams: an index 1..L or a fraction of L (default 0.75)",
    "prompts": "prompt set: generic | ssv2 (its text hash keys the cache)",
    "text_pooling": "last | mean_after_video",
    "support_prompt": "true | false: the label-aware support_prompt_state stream (default true)",
    "label_templates": "true | false: label_state averaged over the 16 MA-FSAR templates (default false)",
    "captions": "minilm | mllm: add the caption_embedding stream of fsar-llava-caption",
    "caption_tokens": "the most new tokens of a greedy caption (default 32)",
    "dtype": "auto | float32 | bfloat16 | float16",
    "batch_size": "clips per MLLM forward (default 4)",
}


def declared_options(random_sizes: Sequence[str], **extra: str) -> dict[str, str]:
    """A backbone factory's ``declared_options``: :data:`MLLM_OPTIONS`, ``extra`` and the random sizes."""
    return {**MLLM_OPTIONS, **extra, **{k: "tiny random model size (weights=random only)" for k in random_sizes}}


class MLLMError(ValueError):
    """An MLLM backbone could not be loaded or does not fit the expected layout."""


# ---------------------------------------------------------------------------------------------
# layout and layer


@dataclass(frozen=True)
class VideoTokenLayout:
    """Where a video's visual tokens stand in the decoder sequence.

    groups: token groups (frames, for Video-LLaVA); tokens_per_group: tokens of one group, in order;
    drop_per_group: tokens at the start of each group left out of the group's pooled feature
    (Video-LLaVA's per-frame class token).
    """

    groups: int
    tokens_per_group: int
    drop_per_group: int = 0

    def __post_init__(self) -> None:
        if self.groups < 1 or self.tokens_per_group < 1:
            raise MLLMError(f"VideoTokenLayout: groups and tokens_per_group must be >= 1, got {self}")
        if not 0 <= self.drop_per_group < self.tokens_per_group:
            raise MLLMError(f"VideoTokenLayout: drop_per_group must be in [0, tokens_per_group), got {self}")

    @property
    def total(self) -> int:
        return self.groups * self.tokens_per_group

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, total, D) hidden states at the video positions -> (B, groups, D) means of the kept tokens."""
        if tokens.dim() != 3 or tokens.shape[1] != self.total:
            raise MLLMError(f"VideoTokenLayout.pool: expected (B, {self.total}, D), got {tuple(tokens.shape)}")
        grouped = tokens.reshape(tokens.shape[0], self.groups, self.tokens_per_group, tokens.shape[-1])
        return grouped[:, :, self.drop_per_group :].float().mean(2)


def resolve_layer(layer: int | float | str, depth: int) -> int:
    """Decoder layer index 1..depth from an index (int 1..depth, negative from the end) or a float
    fraction of the depth in (0, 1] (``0.75`` of 32 layers is 24; ``1.0`` the last).

    Hidden state ``l`` is the output of the l-th decoder layer; ``depth`` is taken after the final norm.
    """
    if isinstance(layer, str):
        try:
            layer = float(layer) if "." in layer else int(layer)
        except ValueError:
            raise MLLMError(f"layer must be an index such as 24 or a fraction such as 0.75, got {layer!r}") from None
    if isinstance(layer, bool) or not isinstance(layer, (int, float)):
        raise MLLMError(f"layer must be an int index or a float fraction of the depth, got {layer!r}")
    if isinstance(layer, float):
        if not 0.0 < layer <= 1.0:
            raise MLLMError(f"layer fraction must be in (0, 1], got {layer} (give an index as an int)")
        return max(1, min(depth, round(layer * depth)))
    index = depth + 1 + layer if layer < 0 else layer
    if not 1 <= index <= depth:
        raise MLLMError(f"layer {layer} is outside the decoder's 1..{depth} (or use a fraction such as 0.75)")
    return index


# ---------------------------------------------------------------------------------------------
# prompts (spec section 4)


@dataclass(frozen=True)
class MLLMPrompts:
    """The prompt wording of FSAR-LLaVA's extraction, versioned (its hash keys the feature cache).

    ``query``: the per-clip instruction after the video; it must never contain label text (every
    clip's label-free streams use it). ``support``: the labelled variant of section 4b ("{label}"
    placeholder), the prompt of the label-aware ``support_prompt_state`` of support clips.
    ``class_text``: the text-only prompt (c) of ``label_state``. ``task``: the task-oriented query
    of section 4d ("{candidates}"), off by default, naming only the episode's candidate classes.
    ``caption``: the label-free instruction of the caption baseline (spec section 9, baseline ii).
    """

    name: str
    query: str
    support: str
    class_text: str
    task: str
    caption: str = "Describe what happens in this video in one short sentence."
    version: int = 1

    def query_prompt(self) -> str:
        return self.query

    def support_prompt(self, label: str) -> str:
        return self.support.format(label=label)

    def class_prompt(self, label: str) -> str:
        return self.class_text.format(label=label)

    def task_query(self, candidates: Sequence[str]) -> str:
        """Section 4d: the query instruction naming the episode's candidate classes (no query label)."""
        return self.query + " " + self.task.format(candidates=", ".join(candidates))

    def digest(self) -> str:
        return _digest(json.dumps(asdict(self), sort_keys=True))


def _label_templates() -> tuple[str, ...]:
    from fsar.encoders.prompts import TEMPLATES

    return TEMPLATES


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


PROMPT_SETS: dict[str, MLLMPrompts] = {
    "generic": MLLMPrompts(
        name="generic",
        query="What activity is the person doing in this video? Answer with a short phrase.",
        support="This video shows the action '{label}'. Briefly describe the key motion that defines it.",
        class_text="Describe the action '{label}' in one sentence focusing on body motion and objects.",
        task="Which of these actions: {candidates}?",
    ),
    "ssv2": MLLMPrompts(
        name="ssv2",
        query="Describe how the hand moves the object in this video (direction, contact, outcome) in one short phrase.",
        support="This video shows the action '{label}'. Briefly describe the key motion that defines it.",
        class_text="Describe the action '{label}' in one sentence focusing on body motion and objects.",
        task="Which of these actions: {candidates}?",
    ),
}


# ---------------------------------------------------------------------------------------------
# adapter


class MLLMAdapter(ABC):
    """What one video-MLLM family contributes; see the module docstring."""

    #: backbone name in the registry
    name: str
    #: the class names a weights folder must hold (for error messages), e.g. ("VideoLlavaForConditionalGeneration",)
    expected_classes: tuple[str, ...]
    #: the chat format around the user message; ``{video}`` is the placeholder, ``{text}`` the instruction
    chat_format: str
    #: the format of a text-only message
    text_format: str
    video_placeholder: str = "<video>"
    #: the config's model_type a weights folder must declare
    model_type: str
    #: the default hub id (for messages)
    hub_id: str

    @abstractmethod
    def model_class(self) -> type:
        """The transformers class (e.g. ``VideoLlavaForConditionalGeneration``)."""

    def load_config(self, source: str):
        """The model config of a local folder or hub id, checked to be this family's; :class:`MLLMError`
        naming the problem (an unreadable source, or a folder of another model type, naming the
        expected classes). Reads config.json only."""
        from transformers import AutoConfig

        expected = " / ".join(self.expected_classes)
        try:
            config = AutoConfig.from_pretrained(source)
        except Exception as error:  # missing folder, no network, bad json: one clear message
            raise MLLMError(
                f"{self.name}: could not read a model config from {source!r} ({type(error).__name__}: {error}); "
                f"pass --weights a folder holding a Hugging Face {expected} checkpoint (config.json, weights, "
                f"tokenizer files) or a hub id such as {self.hub_id!r}"
            ) from error
        if getattr(config, "model_type", None) != self.model_type:
            raise MLLMError(
                f"{self.name}: {source!r} holds a {getattr(config, 'model_type', '?')!r} model "
                f"({', '.join(getattr(config, 'architectures', None) or ['no architectures listed'])}); "
                f"the backbone expects {expected} (model_type {self.model_type!r})"
            )
        return config

    def load_tokenizer(self, source: str):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(source)
        except Exception as error:
            raise MLLMError(
                f"{self.name}: could not load the tokenizer of {source!r} ({type(error).__name__}: {error})"
            ) from error

    def load_model(self, source: str, *, dtype: torch.dtype) -> nn.Module:
        """The weights (``from_pretrained``): the expensive step, run only when a clip must be encoded."""
        try:
            return self.model_class().from_pretrained(source, dtype=dtype)
        except Exception as error:
            raise MLLMError(
                f"{self.name}: could not load {' / '.join(self.expected_classes)} from {source!r} "
                f"({type(error).__name__}: {error})"
            ) from error

    def load(self, source: str, *, dtype: torch.dtype) -> tuple[nn.Module, Any]:
        """(model, tokenizer) at once (config checked first)."""
        self.load_config(source)
        return self.load_model(source, dtype=dtype), self.load_tokenizer(source)

    def text_config(self, config):
        """The LLM decoder's config (``num_hidden_layers``, ``hidden_size``)."""
        return config.text_config

    #: whether the decoder's positions are plain 0..L-1 over the real tokens (the default
    #: :meth:`position_ids`); a family with its own position scheme (Qwen2-VL's 3-D M-RoPE) says
    #: False, and the encoder then never shares a prefix cache between prompts
    standard_positions: bool = True

    def vision_dim(self, config) -> int:
        """Width of the ``vision_tower`` stream (the vision config's ``hidden_size``)."""
        return int(getattr(getattr(config, "vision_config", None), "hidden_size", 0))

    def frames_per_group(self, config) -> int:
        """Frames that make one token group (1; Qwen2-VL: its temporal patch, 2)."""
        return 1

    def position_ids(self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Decoder position ids of a left-padded batch with video tokens: 0.. over each row's real tokens."""
        return (mask.cumsum(-1) - 1).clamp_(min=0)

    def generate_inputs(self, model: nn.Module, pixels: torch.Tensor, ids: torch.Tensor) -> dict:
        """The visual keyword arguments of ``model.generate`` for pixels (B, T, 3, H, W) (the caption baseline)."""
        return {"pixel_values_videos": pixels}

    def check_model(self, model: nn.Module, layout: VideoTokenLayout) -> None:
        """Check a loaded model against the layout its config declares (default: nothing more to check)."""

    @abstractmethod
    def layout(self, config) -> VideoTokenLayout:
        """The video token layout the model's config declares (checked against the model by :meth:`check_model`)."""

    @abstractmethod
    def video_token_id(self, config) -> int:
        """The id the decoder expects at every video position."""

    @abstractmethod
    def image_geometry(self, config) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
        """(image_size, mean, std) of the frames the vision tower takes."""

    @abstractmethod
    def visual_tokens(self, model: nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (B, T, 3, H, W) -> (projected tokens (B, T * tokens_per_group, D),
        vision tower's selected layer pooled per frame (B, T, D_vis))."""

    @abstractmethod
    def decoder(self, model: nn.Module) -> nn.Module:
        """The LLM decoder stack (``embed_tokens``, ``layers``, final norm; takes ``inputs_embeds``)."""

    def language_head(self, model: nn.Module) -> nn.Module:
        return model.lm_head


# ---------------------------------------------------------------------------------------------
# the generic encoder


class _StopForward(Exception):
    """Raised by the layer hook once the chosen layer has run: the rest of the decoder is not needed."""


def default_dtype() -> torch.dtype:
    """bf16 on a CUDA device that has it, else fp16 on CUDA, float32 without CUDA."""
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class VideoMLLMEncoder(Encoder):
    """A frozen video MLLM producing FSAR-LLaVA's named streams (module docstring).

    Attributes beyond :class:`Encoder`: ``model`` (the transformers model; reading it loads the
    weights of a lazy encoder), ``config``, ``tokenizer``, ``adapter``, ``layout``
    (:class:`VideoTokenLayout`), ``num_frames`` (the model's frame count), ``layer`` (resolved),
    ``prompts`` (:class:`MLLMPrompts`), ``vision_dim``, ``decoder_depth``, ``loaded``.

    Lazy loading: built from ``source`` (a folder of weight files) instead of ``model``, the encoder
    reads only the config and the tokenizer; the weights load on the first forward (a clip or a
    text to encode). Everything the feature cache compares (streams, ``stream_key()``, the weights
    fingerprint from the config and the weight files, :meth:`weights_identity`) is known before, so
    training and evaluating from a full cache never load the MLLM. ``.to(device)`` before loading
    records where the model goes.
    """

    shared_space = False

    def __init__(
        self,
        *,
        adapter: MLLMAdapter,
        tokenizer: Any,
        model: nn.Module | None = None,
        config: Any = None,
        source: str | Path | None = None,
        dtype: torch.dtype | None = None,
        layer: int | float = 0.75,
        prompts: str | MLLMPrompts = "generic",
        text_pooling: str = "last",
        batch_size: int = 4,
        weights: str | None = None,
        captions: str | None = None,
        caption_tokens: int = 32,
        support_prompt: bool = True,
        label_templates: bool = False,
    ) -> None:
        super().__init__()
        if (model is None) == (source is None):
            raise MLLMError(f"{adapter.name}: give the encoder a loaded model or a source folder to load lazily, not both")
        self.adapter = adapter
        self.tokenizer = tokenizer
        self.weights = weights
        self.name = adapter.name
        self.config = model.config if model is not None else config
        if self.config is None:
            raise MLLMError(f"{adapter.name}: a lazily loaded encoder needs the model config")
        self._source = None if source is None else str(source)
        self._device = torch.device("cpu")
        self._dtype = dtype if dtype is not None else (next(model.parameters()).dtype if model is not None else torch.float32)
        self.layout = adapter.layout(self.config)
        self.num_frames = self.layout.groups * int(adapter.frames_per_group(self.config))
        self.video_id = adapter.video_token_id(self.config)
        text_config = adapter.text_config(self.config)
        self.decoder_depth = int(text_config.num_hidden_layers)
        self.layer = resolve_layer(layer, self.decoder_depth)
        self.layer_option = layer
        if isinstance(prompts, str):
            if prompts not in PROMPT_SETS:
                raise MLLMError(f"{self.name}: unknown prompt set {prompts!r}; known: {sorted(PROMPT_SETS)}")
            prompts = PROMPT_SETS[prompts]
        self.prompts = prompts
        if text_pooling not in ("last", "mean_after_video"):
            raise MLLMError(f"{self.name}: text_pooling must be 'last' or 'mean_after_video', got {text_pooling!r}")
        self.text_pooling = text_pooling
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise MLLMError(f"{self.name}: batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.image_size, self.mean, self.std = adapter.image_geometry(self.config)
        self.feature_dim = int(text_config.hidden_size)
        self.text_dim = self.feature_dim
        self.vision_dim = int(adapter.vision_dim(self.config))
        self._check_tokenizer()
        if captions not in CAPTION_ENCODERS:
            raise MLLMError(f"{self.name}: captions must be one of {CAPTION_ENCODERS}, got {captions!r}")
        if not isinstance(caption_tokens, int) or isinstance(caption_tokens, bool) or caption_tokens < 1:
            raise MLLMError(f"{self.name}: caption_tokens must be an integer >= 1, got {caption_tokens!r}")
        self.captions = captions
        self.caption_tokens = int(caption_tokens)
        self._caption_text: tuple[nn.Module, Any] | None = None  # MiniLM, built on first use
        self.caption_dim = {None: 0, "mllm": self.text_dim, "minilm": 384}[captions]
        if not isinstance(support_prompt, bool):
            raise MLLMError(f"{self.name}: support_prompt must be true or false, got {support_prompt!r}")
        self.support_prompt = support_prompt
        if not isinstance(label_templates, bool):
            raise MLLMError(f"{self.name}: label_templates must be true or false, got {label_templates!r}")
        self.label_templates = label_templates
        if model is not None:
            self._install(model)

    # -- the model, loaded now or on first use ------------------------------------------------------
    @property
    def loaded(self) -> bool:
        """Whether the MLLM's weights are in memory (a lazy encoder loads them on the first forward)."""
        return "model" in self._modules

    @property
    def model(self) -> nn.Module:
        """The transformers model; a lazy encoder loads it now."""
        if not self.loaded:
            self._load()
        return self._modules["model"]

    def load_weights(self) -> "VideoMLLMEncoder":
        """Load the MLLM's weights now (a no-op once loaded); normally the first forward does it."""
        if not self.loaded:
            self._load()
        return self

    def _load(self) -> None:
        log.info("%s: loading the MLLM weights from %s (%s, %s)", self.name, self._source, self._dtype, self._device)
        model = self.adapter.load_model(self._source, dtype=self._dtype)
        self._install(model.to(self._device))

    def _install(self, model: nn.Module) -> None:
        model.requires_grad_(False)  # from_pretrained leaves requires_grad True
        model.eval()
        self.adapter.check_model(model, self.layout)
        depth = len(self.adapter.decoder(model).layers)
        if depth != self.decoder_depth:
            raise MLLMError(f"{self.name}: the model has {depth} decoder layers, its config says {self.decoder_depth}")
        self._modules["model"] = model  # under the name "model" (a property guards the attribute)

    def _apply(self, fn, recurse: bool = True):
        """``.to()``, ``.cuda()``, ``.half()`` ... : before the weights load, remember where they go."""
        if not self.loaded:
            probe = fn(torch.zeros((), dtype=self._dtype, device=self._device))
            self._device, self._dtype = probe.device, probe.dtype
        return super()._apply(fn, recurse)

    # -- set-up checks -------------------------------------------------------------------------
    def _check_tokenizer(self) -> None:
        placeholder = self.adapter.video_placeholder
        token_id = self.tokenizer.convert_tokens_to_ids(placeholder)
        if token_id != self.video_id:
            raise MLLMError(
                f"{self.name}: the tokenizer maps {placeholder!r} to id {token_id}, but the model's config "
                f"expects video token id {self.video_id}; the tokenizer and the weights do not belong together"
            )

    def weight_files(self) -> tuple[Path, ...]:
        """The weight files of a local folder (safetensors / bin, sorted); () for hub ids and random builds."""
        folder = self._source or self.weights
        if not folder or folder == "random":
            return ()
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            return ()
        return tuple(sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")))

    def weights_identity(self) -> dict | None:
        """What the weights fingerprint hashes besides the weight files, known without loading them:
        the family, the model config and the dtype (None without weight files: the fingerprint then
        samples the loaded tensors)."""
        if not self.weight_files():
            return None
        config = self.config.to_dict()
        for volatile in ("transformers_version", "_name_or_path", "dtype", "torch_dtype"):
            config.pop(volatile, None)
        return {"backbone": self.name, "config": config, "dtype": str(self._dtype if not self.loaded else self.dtype)}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device if self.loaded else self._device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype if self.loaded else self._dtype

    def train(self, mode: bool = True) -> "VideoMLLMEncoder":
        """Record the flag but keep the MLLM in eval mode (it is frozen: no dropout)."""
        self.training = mode
        if self.loaded:
            self._modules["model"].train(False)
        return self

    # -- the fsar stream hooks (CONTRACT section 2) --------------------------------------------
    def clip_stream_names(self) -> tuple[str, ...]:
        return CLIP_STREAMS + self.label_stream_names() + (("caption_embedding",) if self.captions else ())

    def label_stream_names(self) -> tuple[str, ...]:
        """``support_prompt_state``: computed under the support prompt (b) naming the clip's class."""
        return (SUPPORT_STREAM,) if self.support_prompt else ()

    def class_stream_names(self) -> tuple[str, ...]:
        return CLASS_STREAMS

    def stream_key(self) -> dict:
        """Everything besides the weights that changes the streams (part of the cache key)."""
        return {
            "layer": self.layer,
            "decoder_depth": self.decoder_depth,
            "prompt_set": self.prompts.name,
            "prompt_version": self.prompts.version,
            "prompt_hash": self.prompts.digest(),
            "text_pooling": self.text_pooling,
            "tokens": [self.layout.groups, self.layout.tokens_per_group, self.layout.drop_per_group],
            "dtype": str(self.dtype).replace("torch.", ""),
            **({"captions": self.captions, "caption_tokens": self.caption_tokens} if self.captions else {}),
            **({"support_prompt_hash": _digest(self.prompts.support)} if self.support_prompt else {}),
            **({"label_templates": _digest(json.dumps(_label_templates()))} if self.label_templates else {}),
        }

    def encode_clips(self, frames: torch.Tensor, labels: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """frames (B, T, 3, H, W), normalised -> {"features": (B, T, D), "prompt_state": (B, D),
        "vision_tower": (B, T, D_vis)}, float32, one forward per chunk of ``batch_size`` clips.

        ``labels`` (one class name per clip; support clips only) adds ``support_prompt_state`` (B, D), the
        last prompt token's state under the support prompt (b) naming each clip's own class: a second
        forward per chunk. Without ``labels`` no prompt names a class."""
        self._check_frames(frames)
        if labels is not None:
            if isinstance(labels, str) or len(labels) != frames.shape[0] or not all(isinstance(x, str) for x in labels):
                raise ValueError(f"{self.name}: labels must be one class name per clip ({frames.shape[0]}), "
                                 f"got {labels!r:.120}")
            labels = list(labels)
        prompt = self.prompts.query_prompt()
        chunks = []
        for start in range(0, frames.shape[0], self.batch_size):
            part = frames[start : start + self.batch_size]
            if labels is not None and self.support_prompt:  # the two prompts share the video's decoder pass
                named = [self.prompts.support_prompt(x) for x in labels[start : start + part.shape[0]]]
                chunk, labelled = self._video_forwards(part, [[prompt] * part.shape[0], named])
                chunk[SUPPORT_STREAM] = labelled["prompt_state"]
            else:
                chunk = self._video_forward(part, [prompt] * part.shape[0])
            if self.captions:
                chunk["caption_embedding"] = self.embed_captions(self.caption(part))
            chunks.append(chunk)
        return {name: torch.cat([c[name] for c in chunks]) for name in chunks[0]}

    def encode_task_queries(self, frames: torch.Tensor, candidates: Sequence[str]) -> torch.Tensor:
        """Section 4d (off by default): ``prompt_state`` (B, D) under the task-oriented query that names the
        episode's candidate classes (and nothing else). One MLLM pass per clip and episode: not cacheable."""
        self._check_frames(frames)
        prompt = self.prompts.task_query(list(candidates))
        parts = [self._video_forward(part, [prompt] * part.shape[0])["prompt_state"]
                 for part in frames.split(self.batch_size)]
        return torch.cat(parts)

    # -- the caption pipeline (the spec's baseline ii) ----------------------------------------------
    def caption(self, frames: torch.Tensor, *, max_new_tokens: int | None = None) -> list[str]:
        """Greedy captions of clips (B, T, 3, H, W) with the label-free caption prompt, at most
        ``max_new_tokens`` (default ``caption_tokens``) new tokens each."""
        ids = self.caption_ids(frames, max_new_tokens=max_new_tokens)
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    @torch.no_grad()
    def caption_ids(self, frames: torch.Tensor, *, max_new_tokens: int | None = None) -> torch.Tensor:
        """The new token ids of :meth:`caption` (B, <= max_new_tokens), padding after an early end."""
        self._check_frames(frames)
        prompt = self.adapter.chat_format.format(video=self.adapter.video_placeholder, text=self.prompts.caption)
        ids, mask, _ = self._batch([prompt] * frames.shape[0], with_video=True)
        device = self.device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = ids.to(device)
        out = self.model.generate(
            input_ids=ids, attention_mask=mask.to(device),
            **self.adapter.generate_inputs(self.model, frames.to(device=device, dtype=self.dtype), ids),
            max_new_tokens=int(max_new_tokens or self.caption_tokens), do_sample=False, num_beams=1,
            pad_token_id=int(pad),
        )
        return out[:, ids.shape[1] :].cpu()

    @torch.no_grad()
    def embed_captions(self, captions: list[str]) -> torch.Tensor:
        """Captions -> (N, caption_dim): the MLLM's own text state (``mllm``) or MiniLM sentence
        embeddings (``minilm``, the embedded text encoder, L2-normalised mean pooling)."""
        if self.captions == "mllm" or self.captions is None:
            return self._text_states([self.adapter.text_format.format(text=c) for c in captions])
        if self._caption_text is None:
            from fsar.encoders.embedded import _build_minilm

            model, tokenizer, _ = _build_minilm(True)
            self._caption_text = (model.eval(), tokenizer)
        model, tokenizer = self._caption_text
        batch = tokenizer(captions, padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def encode_frames(self, frames: torch.Tensor, text_features: torch.Tensor | None = None) -> torch.Tensor:
        """The ``features`` stream (B, T, D); ``text_features`` is ignored (no text inside the encoder)."""
        return self.encode_clips(frames)["features"]

    def encode_class_streams(self, class_names: list[str]) -> dict[str, torch.Tensor]:
        """{"label_state": (N, D)}: prompt (c) per class name, no video. With ``label_templates`` the
        mean of the states of prompt (c) over the 16 MA-FSAR templates as the label phrase (spec 4c),
        the class name normalised into words as :class:`fsar.encoders.prompts.ClassTextBank` does."""
        if isinstance(class_names, str):
            raise TypeError(f"{self.name}: encode_class_streams takes a list of class names, not one string")
        if not self.label_templates:
            prompts = [self.adapter.text_format.format(text=self.prompts.class_prompt(n)) for n in class_names]
            return {"label_state": self._text_states(prompts)}
        from fsar.encoders.prompts import normalise_class_name

        templates = _label_templates()
        prompts = [self.adapter.text_format.format(text=self.prompts.class_prompt(t.format(normalise_class_name(n))))
                   for n in class_names for t in templates]
        states = self._text_states(prompts)
        return {"label_state": states.reshape(len(class_names), len(templates), -1).mean(1)}

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Each text as a whole prompt (no chat format added) -> its last token's state at layer l* (N, D)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"{self.name}: encode_text takes a list of strings, got {texts!r:.80}")
        return self._text_states(list(texts))

    # -- internals -----------------------------------------------------------------------------
    def _check_frames(self, frames: torch.Tensor) -> None:
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"{self.name}: frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
        if tuple(frames.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"{self.name}: expects {self.image_size}x{self.image_size} frames, got {tuple(frames.shape[-2:])}"
            )
        if frames.shape[1] != self.num_frames:
            raise ValueError(
                f"{self.name}: the model takes {self.num_frames} frames per clip (its config: "
                f"{self.layout.total} video tokens = {self.layout.groups} x {self.layout.tokens_per_group}), "
                f"got T={frames.shape[1]}; extract with --frames {self.num_frames} (short clips repeat frames)"
            )

    def _text_states(self, prompts: list[str]) -> torch.Tensor:
        if not prompts:
            return torch.zeros(0, self.text_dim)
        parts = [self._forward(None, prompts[i : i + self.batch_size])["prompt_state"]
                 for i in range(0, len(prompts), self.batch_size)]
        return torch.cat(parts)

    def _video_forward(self, frames: torch.Tensor, instructions: list[str]) -> dict[str, torch.Tensor]:
        prompts = [
            self.adapter.chat_format.format(video=self.adapter.video_placeholder, text=text) for text in instructions
        ]
        return self._forward(frames, prompts)

    @torch.no_grad()
    def _video_forwards(self, frames: torch.Tensor, instruction_sets: list[list[str]]) -> list[dict[str, torch.Tensor]]:
        """One :meth:`_video_forward` per instruction set (one instruction per clip each), sharing the work
        they have in common: the chat format puts the video first, so the text before it and the video
        tokens (the prefix) are the same under every instruction, and causal attention makes their states
        the same too. The vision side and the decoder run once over the prefix, keeping its key/value
        cache (layers 1..l*); each set then runs only its own suffix (instruction + answer cue, right
        padded) on that cache. Equal to separate forwards (tested); for k sets about 1/k of the decoder
        cost, since the video tokens are nearly the whole sequence. Falls back to separate forwards for
        a chat format whose prefix differs between instructions."""
        placeholder = self.adapter.video_placeholder
        rows = [[self.token_ids(self.adapter.chat_format.format(video=placeholder, text=t), with_video=True)
                 for t in texts] for texts in instruction_sets]
        cut = {id(r): max(j for j, t in enumerate(r) if t == self.video_id) + 1 for rs in rows for r in rs}
        prefixes = {tuple(r[: cut[id(r)]]) for rs in rows for r in rs}
        if len(prefixes) != 1 or not self.adapter.standard_positions:
            return [self._video_forward(frames, list(texts)) for texts in instruction_sets]
        from transformers import DynamicCache

        prefix = list(next(iter(prefixes)))
        batch, length = frames.shape[0], len(prefix)
        device = self.device
        decoder = self.adapter.decoder(self.model)
        ids = torch.tensor([prefix] * batch, device=device)
        video_mask = ids == self.video_id
        tokens, vision = self.adapter.visual_tokens(self.model, frames.to(device=device, dtype=self.dtype))
        if tokens.shape[1] != self.layout.total or int(video_mask[0].sum()) != self.layout.total:
            raise MLLMError(
                f"{self.name}: the vision side gave {tokens.shape[1]} tokens per clip but the prompt holds "
                f"{int(video_mask[0].sum())} video positions ({self.layout.groups} x "
                f"{self.layout.tokens_per_group} from the config); the model and its config disagree"
            )
        embeds = decoder.embed_tokens(ids).masked_scatter(video_mask.unsqueeze(-1), tokens.to(self.dtype))
        cache = DynamicCache()
        mask = torch.ones(batch, length, dtype=torch.long, device=device)
        positions = torch.arange(length, device=device).expand(batch, length)
        hidden = self._layer_states(decoder, embeds, mask, positions, cache=cache)
        video_states = hidden[video_mask].reshape(batch, self.layout.total, hidden.shape[-1])
        shared = {"features": self.layout.pool(video_states), "vision_tower": vision.float()}
        pad = self.tokenizer.pad_token_id
        pad = int(pad if pad is not None else (self.tokenizer.unk_token_id or 0))
        outs = []
        for set_rows in rows:
            suffixes = [r[length:] for r in set_rows]
            longest = max(len(x) for x in suffixes)
            suffix_ids = torch.full((batch, longest), pad, dtype=torch.long)
            suffix_mask = torch.zeros((batch, longest), dtype=torch.long)
            for i, suffix in enumerate(suffixes):  # right padding: no real token attends to a pad (causal)
                suffix_ids[i, : len(suffix)] = torch.tensor(suffix)
                suffix_mask[i, : len(suffix)] = 1
            suffix_ids, suffix_mask = suffix_ids.to(device), suffix_mask.to(device)
            positions = (length + torch.arange(longest, device=device)).expand(batch, longest)
            states = self._layer_states(decoder, decoder.embed_tokens(suffix_ids), torch.cat([mask, suffix_mask], 1),
                                        positions, cache=cache)
            cache.crop(-longest)  # back to the prefix for the next set
            lengths = torch.tensor([len(x) for x in suffixes], device=device)
            if self.text_pooling == "last":
                state = states[torch.arange(batch, device=device), lengths - 1].float()
            else:
                state = torch.stack([states[i, : int(n)].float().mean(0) for i, n in enumerate(lengths)])
            outs.append({**shared, "prompt_state": state})
        return [{k: v.cpu() if device.type == "cpu" else v for k, v in out.items()} for out in outs]

    def token_ids(self, prompt: str, *, with_video: bool) -> list[int]:
        """Token ids of ``prompt`` with its single video placeholder expanded to ``layout.total`` ids."""
        ids = list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        where = [i for i, t in enumerate(ids) if t == self.video_id]
        wanted = 1 if with_video else 0
        if len(where) != wanted:
            raise MLLMError(
                f"{self.name}: prompt {prompt!r:.120} tokenises to {len(where)} video placeholder(s) "
                f"{self.adapter.video_placeholder!r}, expected {wanted}"
            )
        if not with_video:
            return ids
        at = where[0]
        return ids[:at] + [self.video_id] * self.layout.total + ids[at + 1 :]

    def _batch(self, prompts: list[str], with_video: bool) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Left-padded ids (B, L), attention mask (B, L), and per row the count of tokens after the video."""
        rows = [self.token_ids(p, with_video=with_video) for p in prompts]
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None else 0
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), int(pad), dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        after = []
        for i, row in enumerate(rows):
            ids[i, length - len(row) :] = torch.tensor(row)
            mask[i, length - len(row) :] = 1
            if with_video:
                last_video = max(j for j, t in enumerate(row) if t == self.video_id)
                after.append(len(row) - 1 - last_video)
            else:
                after.append(len(row))
        return ids, mask, after

    @torch.no_grad()
    def _forward(self, frames: torch.Tensor | None, prompts: list[str]) -> dict[str, torch.Tensor]:
        with_video = frames is not None
        ids, mask, after = self._batch(prompts, with_video)
        device = self.device
        ids, mask = ids.to(device), mask.to(device)
        decoder = self.adapter.decoder(self.model)
        embeds = decoder.embed_tokens(ids)
        out: dict[str, torch.Tensor] = {}
        video_mask = ids == self.video_id
        if with_video:
            pixels = frames.to(device=device, dtype=self.dtype)
            tokens, vision = self.adapter.visual_tokens(self.model, pixels)
            if tokens.shape[1] != self.layout.total or int(video_mask[0].sum()) != self.layout.total:
                raise MLLMError(
                    f"{self.name}: the vision side gave {tokens.shape[1]} tokens per clip but the prompt holds "
                    f"{int(video_mask[0].sum())} video positions ({self.layout.groups} x "
                    f"{self.layout.tokens_per_group} from the config); the model and its config disagree"
                )
            embeds = embeds.masked_scatter(video_mask.unsqueeze(-1), tokens.to(embeds.dtype))
            out["vision_tower"] = vision.float()
        if with_video:
            position_ids = self.adapter.position_ids(self.model, ids, mask)
        else:
            position_ids = (mask.cumsum(-1) - 1).clamp_(min=0)
        hidden = self._layer_states(decoder, embeds, mask, position_ids)
        if with_video:
            video_states = hidden[video_mask].reshape(len(prompts), self.layout.total, hidden.shape[-1])
            out["features"] = self.layout.pool(video_states)
        if self.text_pooling == "last" or not with_video:
            out["prompt_state"] = hidden[:, -1].float()
        else:
            rows = [hidden[i, hidden.shape[1] - n :].float().mean(0) for i, n in enumerate(after)]
            out["prompt_state"] = torch.stack(rows)
        return {k: v.cpu() if device.type == "cpu" else v for k, v in out.items()}

    def _layer_states(self, decoder: nn.Module, embeds, mask, position_ids, cache=None) -> torch.Tensor:
        """Hidden states after decoder layer ``self.layer`` (after the final norm when it is the last).
        ``cache``: a key/value cache to extend (layers 1..l* only: the forward stops there)."""
        kwargs = dict(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=cache is not None)
        if cache is not None:  # transformers renames past_key_values to cache (5.x deprecation)
            kwargs["cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"] = cache
        if self.layer == self.decoder_depth:
            return decoder(**kwargs).last_hidden_state
        captured: list[torch.Tensor] = []

        def hook(module, args, output):
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _StopForward

        handle = decoder.layers[self.layer - 1].register_forward_hook(hook)
        try:
            decoder(**kwargs)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise MLLMError(f"{self.name}: decoder layer {self.layer} did not run")
        return captured[0]

    def extra_repr(self) -> str:
        return (
            f"weights={self.weights!r}, layer={self.layer}/{self.decoder_depth}, frames={self.num_frames}, "
            f"tokens/frame={self.layout.tokens_per_group}, prompts={self.prompts.name!r}, dtype={self.dtype}"
        )


def build_mllm_encoder(
    adapter: MLLMAdapter,
    *,
    weights: str | Path | None,
    hub_id: str,
    random_model,
    random_sizes: Sequence[str],
    finetune: str = "frozen",
    layer: int | float | str = 0.75,
    prompts: str = "generic",
    text_pooling: str = "last",
    batch_size: int = 4,
    dtype: str | torch.dtype | None = "auto",
    captions: str | None = None,
    caption_tokens: int = 32,
    support_prompt: bool = True,
    label_templates: bool = False,
    **sizes: Any,
) -> VideoMLLMEncoder:
    """Build a registered video-MLLM backbone (one adapter per family).

    Args:
        weights: local folder, hub id, ``"random"`` (``random_model(**sizes)``: a tiny random model
            of the real classes, offline), or None (``hub_id``).
        finetune: only ``"frozen"``: the MLLM never trains here.
        layer: decoder layer of the streams, an index 1..L or a fraction of L (default 0.75).
        prompts: prompt set of :data:`PROMPT_SETS` (``generic``, ``ssv2``).
        text_pooling: ``last`` prompt token, or ``mean_after_video``.
        batch_size: clips per forward pass.
        dtype: ``auto`` (bf16/fp16 on CUDA, float32 otherwise), ``float32``, ``bfloat16``, ``float16``.
        captions: the caption baseline's text encoder (``mllm`` or ``minilm``) to add the
            ``caption_embedding`` stream; None (default) = no captions.
        caption_tokens: the most new tokens of a greedy caption.
        support_prompt: also give the label-aware ``support_prompt_state`` stream (the support prompt
            (b) naming the clip's class; one more decoder pass per clip at extraction).
        label_templates: ``label_state`` as the mean over the 16 MA-FSAR templates used as the label
            phrase of prompt (c) (spec 4c); off by default.
    """
    name = adapter.name
    if finetune != "frozen":
        raise MLLMError(f"{name} is always frozen; finetune={finetune!r} is not supported")
    unknown = set(sizes) - set(random_sizes)
    if unknown:
        raise MLLMError(f"{name}: unknown option(s) {sorted(unknown)}")
    torch_dtype = parse_dtype(dtype)
    weights = hub_id if weights is None else str(weights)
    common = dict(
        adapter=adapter, layer=layer, prompts=prompts, text_pooling=text_pooling, batch_size=batch_size,
        weights=weights, captions=captions, caption_tokens=caption_tokens, support_prompt=support_prompt,
        label_templates=label_templates,
    )
    if weights == "random":
        model, tokenizer = random_model(**sizes)
        return VideoMLLMEncoder(model=model.to(torch_dtype), tokenizer=tokenizer, **common)
    if sizes:
        raise MLLMError(f"{name}: size options {sorted(sizes)} only apply to weights='random'")
    source = weights
    if looks_like_path(weights):
        folder = Path(weights).expanduser()
        if not folder.is_dir():
            raise MLLMError(
                f"{name}: weights folder {str(folder)!r} does not exist or is not a folder; pass a folder "
                f"holding a {' / '.join(adapter.expected_classes)} checkpoint, a hub id such as {hub_id!r}, "
                "or 'random'"
            )
        source = str(folder)
    else:
        source = _local_snapshot(weights) or weights  # a hub id downloaded before: its local folder
    config = adapter.load_config(source)
    tokenizer = adapter.load_tokenizer(source)
    if Path(source).is_dir() and any(p.suffix in (".safetensors", ".bin") for p in Path(source).iterdir()):
        return VideoMLLMEncoder(config=config, source=source, dtype=torch_dtype, tokenizer=tokenizer, **common)
    return VideoMLLMEncoder(model=adapter.load_model(source, dtype=torch_dtype), tokenizer=tokenizer, **common)


def _local_snapshot(hub_id: str) -> str | None:
    """The local folder of a hub id already in the Hugging Face cache (None when it is not there)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(hub_id, local_files_only=True)
    except Exception:  # not cached, or no huggingface_hub: load through the hub as usual
        return None


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype()
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise MLLMError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def looks_like_path(weights: str) -> bool:
    """Hub ids are ``owner/name``; anything else with a path shape is meant as a local folder."""
    return (
        weights.startswith(("/", ".", "~"))
        or "\\" in weights
        or weights.count("/") != 1
        or Path(weights).expanduser().exists()
    )
