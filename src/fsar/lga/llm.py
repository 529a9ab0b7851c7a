"""LLM clients for LGA's textual anatomy: each action label -> L ordered stage descriptions.

LGA has a language model rewrite every class name as L atomic descriptions (default
3: **onset, progression, completion**), each naming a subject, a motion and an object.

Describers (anything with ``describe(class_name, num_stages) -> list[str]``):

* :class:`ChatDescriber` -- an OpenAI-compatible ``/chat/completions`` endpoint (a local
  vLLM, llama.cpp or Ollama server, or a hosted API), spoken with ``urllib`` only.
* :class:`TransformersDescriber` -- a local ``transformers`` causal LM from a folder.
* :class:`TemplateDescriber` -- the documented fallback when no LLM is configured:
  stage i of "<label>" reads ``"<position phrase> <label>, <what the person does>"``,
  e.g. for L = 3 and "Closing something":

    - "the start of closing something: a person begins the action"
    - "the middle of closing something: a person carries out the action"
    - "the end of closing something: a person completes the action"

  It carries only the label (like LGA's "Textual-An off" ablation plus a position
  phrase), so runs that use it say so.

Both LLM describers share one prompt (:func:`build_messages`) asking for strict JSON of
exactly the form ``{"stages": ["...", "...", "..."]}`` (L strings in temporal order),
decode deterministically (temperature 0), validate the reply (:func:`parse_stages`) and
re-ask a bounded number of times, telling the model what was wrong; after the last
failed attempt :class:`DescriptionError` names the class and quotes the last bad reply.

:data:`DESCRIBER_OPTIONS` are the options that pick a describer (``--llm-url`` ...), as the
LGA method and ``fsar describe`` declare them; :func:`describer_from_options` builds the
describer from their values. The description cache is :mod:`fsar.lga.descriptions`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping, Protocol

from fsar.options import MethodOption

__all__ = [
    "DESCRIBER_OPTIONS",
    "ChatDescriber",
    "DescriptionError",
    "Describer",
    "LLMDescriber",
    "TemplateDescriber",
    "TransformersDescriber",
    "TransientLLMError",
    "build_messages",
    "chat_completions_url",
    "describer_from_options",
    "parse_stages",
    "stage_names",
]

log = logging.getLogger(__name__)

TEMPLATE_SOURCE = "template"
#: Descriptions longer than this many words are truncated (with a warning): CLIP's text
#: encoder reads 77 BPE tokens, roughly 55 English words; the prompt asks for <= 20.
MAX_WORDS = 50

class DescriptionError(ValueError):
    """A describer could not produce valid stage descriptions (names class and reason)."""


class Describer(Protocol):
    """Anything that turns one action label into ``num_stages`` ordered descriptions."""

    source: str

    def describe(self, class_name: str, num_stages: int) -> list[str]: ...


def stage_names(num_stages: int) -> list[str]:
    """Names of the L temporal stages: onset/progression/completion for L = 3."""
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1, got {num_stages}")
    if num_stages == 1:
        return ["whole action"]
    if num_stages == 2:
        return ["onset", "completion"]
    if num_stages == 3:
        return ["onset", "progression", "completion"]
    middle = [f"progression {i}" for i in range(1, num_stages - 1)]
    return ["onset", *middle, "completion"]


# ----------------------------------------------------------------------------- prompt


def build_messages(class_name: str, num_stages: int) -> list[dict[str, str]]:
    """The chat prompt asking for the textual anatomy of ``class_name`` as strict JSON."""
    names = stage_names(num_stages)
    example = json.dumps({"stages": [f"<{name} sentence>" for name in names]})
    user = (
        f'Split the action "{class_name}" into exactly {num_stages} consecutive phase'
        f"{'s' if num_stages > 1 else ''}, in temporal order: {', '.join(names)}. "
        "For each phase think of the subject (who acts), the motion (what the body or hands "
        "do) and the object (what is acted on, or 'none'), and write one sentence of at most "
        "20 words that names all three. Describe only what is visible; no speculation. "
        'Keep placeholders such as "something" exactly as written in the action. '
        f"Answer with only a JSON object of exactly this form, with {num_stages} "
        f"string{'s' if num_stages > 1 else ''} in temporal order and nothing else: {example}"
    )
    return [
        {"role": "system", "content": "You describe human actions for a video recognition system."},
        {"role": "user", "content": user},
    ]


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_stages(reply: str, num_stages: int) -> list[str]:
    """Validate an LLM reply: a JSON object ``{"stages": [...]}`` with exactly L non-empty strings.

    A surrounding Markdown code fence is tolerated (many chat models add one even when
    asked not to); anything else -- other keys, a bare list, wrong count, empty or
    non-string items -- raises ValueError saying what is wrong. Whitespace is collapsed;
    a description over :data:`MAX_WORDS` words is truncated with a warning.
    """
    text = reply.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"reply is not JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(data, dict):
        raise ValueError(f"reply is a JSON {type(data).__name__}, not an object with key 'stages'")
    if set(data) != {"stages"}:
        raise ValueError(f"reply object must have exactly the key 'stages', got keys {sorted(data)}")
    stages = data["stages"]
    if not isinstance(stages, list):
        raise ValueError(f"'stages' must be a list, got {type(stages).__name__}")
    if len(stages) != num_stages:
        raise ValueError(f"'stages' must hold exactly {num_stages} strings, got {len(stages)}")
    cleaned = []
    for index, stage in enumerate(stages):
        if not isinstance(stage, str):
            raise ValueError(f"stage {index} is a {type(stage).__name__}, not a string")
        words = stage.split()
        if not words:
            raise ValueError(f"stage {index} is empty")
        if len(words) > MAX_WORDS:
            log.warning("stage %d has %d words; truncated to %d", index, len(words), MAX_WORDS)
            words = words[:MAX_WORDS]
        cleaned.append(" ".join(words))
    return cleaned


def _shorten(text: str, limit: int = 300) -> str:
    text = text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
    return repr(text)


# ----------------------------------------------------------------------------- describers


class LLMDescriber:
    """Prompt, validate, re-ask: the part every LLM backend shares.

    Subclasses implement :meth:`complete` (messages -> reply text). A reply that fails
    :func:`parse_stages` is answered with a correction message and asked again, at most
    ``retries`` more times; then :class:`DescriptionError` names the class, the reason and
    the last reply. :class:`TransientLLMError` from ``complete`` (timeouts, 5xx) is
    retried the same way; any other error propagates at once.
    """

    source = "llm"

    def __init__(self, *, retries: int = 2, retry_delay: float = 1.0) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.retries = retries
        self.retry_delay = retry_delay

    def complete(self, messages: list[dict[str, str]]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self, class_name: str, num_stages: int) -> list[str]:
        messages = build_messages(class_name, num_stages)
        problem = ""
        last_reply: str | None = None
        for attempt in range(self.retries + 1):
            if attempt and self.retry_delay:
                time.sleep(self.retry_delay * attempt)
            try:
                reply = self.complete(messages)
            except TransientLLMError as error:
                problem, last_reply = str(error), None
                log.warning("describing %r: attempt %d failed: %s", class_name, attempt + 1, error)
                continue
            except DescriptionError as error:
                raise DescriptionError(f"describing class {class_name!r}: {error}") from None
            try:
                return parse_stages(reply, num_stages)
            except ValueError as error:
                problem, last_reply = str(error), reply
                log.warning("describing %r: attempt %d: invalid reply: %s", class_name, attempt + 1, error)
                messages = messages[:2] + [
                    {"role": "assistant", "content": reply},
                    {
                        "role": "user",
                        "content": f"That reply was not valid: {error}. Answer again with only the "
                        f'JSON object {{"stages": [...]}} holding exactly {num_stages} non-empty '
                        "strings in temporal order.",
                    },
                ]
        last = "no reply" if last_reply is None else f"last reply: {_shorten(last_reply)}"
        raise DescriptionError(
            f"{self.source} gave no valid description of class {class_name!r} after "
            f"{self.retries + 1} attempt(s): {problem}; {last}"
        )


class TransientLLMError(RuntimeError):
    """A failure worth retrying (timeout, server busy, 5xx)."""


def chat_completions_url(url: str) -> str:
    """``http://host:port``, ``.../v1`` or ``.../v1/chat/completions`` -> the completions URL."""
    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"LLM URL must start with http:// or https://, got {url!r}")
    if base.endswith("/chat/completions"):
        return base
    if re.search(r"/v\d+$", base):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


class ChatDescriber(LLMDescriber):
    """An OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, hosted APIs).

    POSTs ``{url}/chat/completions`` with temperature 0 and a ``response_format`` JSON
    hint (``json_mode=False`` drops the hint for servers that reject it). ``api_key`` is
    sent as a bearer token when given.
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 2,
        retry_delay: float = 1.0,
        json_mode: bool = True,
        max_tokens: int = 400,
    ) -> None:
        super().__init__(retries=retries, retry_delay=retry_delay)
        if not model:
            raise ValueError("an LLM model name is required with an LLM URL (--llm-model)")
        self.url = chat_completions_url(url)
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.json_mode = json_mode
        self.max_tokens = max_tokens
        self.source = f"chat:{model}"

    def complete(self, messages: list[dict[str, str]]) -> str:
        body: dict = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read()[:300].decode("utf-8", "replace")
            message = f"{self.url} answered HTTP {error.code}: {detail}"
            if error.code == 429 or error.code >= 500:
                raise TransientLLMError(message) from None
            raise DescriptionError(message) from None
        except (TimeoutError, socket.timeout):
            raise TransientLLMError(f"{self.url} did not answer within {self.timeout:g} s") from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, (TimeoutError, socket.timeout)):
                raise TransientLLMError(f"{self.url} did not answer within {self.timeout:g} s") from None
            raise DescriptionError(f"cannot reach the LLM server at {self.url}: {error.reason}") from None
        try:
            data = json.loads(payload)
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            # Not the OpenAI response shape: hand the raw body to the validator's retry loop.
            return payload.decode("utf-8", "replace")
        if not isinstance(content, str):
            return json.dumps(content)
        return content


class TransformersDescriber(LLMDescriber):
    """A local ``transformers`` causal LM (``AutoModelForCausalLM`` + ``AutoTokenizer``) from a folder.

    Greedy decoding (temperature 0). Uses the tokenizer's chat template when it has one,
    otherwise a plain "role: content" transcript ending in "assistant:". ``generate`` can
    replace the model's generation (tests, custom runtimes): ``generate(prompt_text) -> reply``.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        max_new_tokens: int = 256,
        retries: int = 2,
        device: str = "cpu",
    ) -> None:
        super().__init__(retries=retries, retry_delay=0.0)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"LLM folder {folder} does not exist or is not a folder")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder).to(device).eval()
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.source = f"transformers:{folder.name}"

    def prompt_ids(self, messages: list[dict[str, str]]):
        if getattr(self.tokenizer, "chat_template", None):
            encoded = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            return encoded["input_ids"]
        transcript = "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:"
        return self.tokenizer(transcript, return_tensors="pt")["input_ids"]

    def complete(self, messages: list[dict[str, str]]) -> str:
        import torch

        input_ids = self.prompt_ids(messages).to(self.device)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        with torch.no_grad():
            output = self.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
        return self.tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True)


class TemplateDescriber:
    """The fallback without an LLM: position phrase + label (see the module docstring)."""

    source = TEMPLATE_SOURCE

    def describe(self, class_name: str, num_stages: int) -> list[str]:
        # Same normalisation as the prompt templates: brackets, underscores, CamelCase.
        from fsar.encoders.prompts import normalise_class_name

        try:
            label = normalise_class_name(class_name)
        except ValueError:
            raise DescriptionError(f"cannot describe the empty class name {class_name!r}") from None
        if num_stages == 1:
            return [f"{label}: a person performs the whole action"]
        out = []
        for index in range(num_stages):
            if index == 0:
                out.append(f"the start of {label}: a person begins the action")
            elif index == num_stages - 1:
                out.append(f"the end of {label}: a person completes the action")
            elif num_stages == 3:
                out.append(f"the middle of {label}: a person carries out the action")
            else:
                out.append(
                    f"the middle of {label}, step {index + 1} of {num_stages}: "
                    "a person carries out the action"
                )
        return out


# ----------------------------------------------------------------------------- options

#: The options that select a describer (method ``lga`` and ``fsar describe``).
DESCRIBER_OPTIONS = (
    MethodOption("llm_url", str, "OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"),
    MethodOption("llm_model", str, "model name to request from --llm-url"),
    MethodOption("llm_folder", str, "local transformers causal LM folder (instead of --llm-url)", metavar="DIR"),
    MethodOption("llm_api_key_env", str, "environment variable holding a bearer token for --llm-url "
                 "(none by default)", metavar="VAR"),
    MethodOption("llm_timeout", float, "seconds per request", default=60.0),
    MethodOption("llm_retries", int, "re-asks after a bad reply", default=2),
    MethodOption("llm_no_json_mode", bool, "do not send response_format=json_object (for servers that reject it)"),
)


def describer_from_options(values: Mapping[str, Any], *, device: str = "cpu") -> LLMDescriber | None:
    """The LLM describer that the :data:`DESCRIBER_OPTIONS` values select, or None (template
    fallback). ``values``: option name -> value; absent or None = not given. ``device``: where
    a local ``--llm-folder`` model runs."""
    def given(name: str, default: Any = None) -> Any:
        value = values.get(name)
        return default if value is None else value

    url, model, folder = given("llm_url"), given("llm_model"), given("llm_folder")
    retries = given("llm_retries", 2)
    if url and folder:
        raise ValueError("give either --llm-url or --llm-folder, not both")
    if model and not url:
        raise ValueError("--llm-model needs --llm-url")
    if url:
        if not model:
            raise ValueError("--llm-url needs --llm-model (the model name the server serves)")
        key_env = given("llm_api_key_env")
        api_key = None
        if key_env:
            api_key = os.environ.get(key_env)
            if not api_key:
                raise ValueError(f"--llm-api-key-env {key_env}: the variable is not set")
        return ChatDescriber(
            url, model, api_key=api_key, timeout=given("llm_timeout", 60.0), retries=retries,
            json_mode=not given("llm_no_json_mode", False),
        )
    if folder:
        return TransformersDescriber(folder, retries=retries, device=str(device))
    return None
