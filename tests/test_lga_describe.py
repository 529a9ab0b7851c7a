"""LGA textual anatomy: prompt/validation, HTTP describer against a real local server,
local transformers describer, cache (atomic, validated), template fallback, CLI glue."""

from __future__ import annotations

import argparse
import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fsar.lga import describe as D
from fsar.lga import descriptions as descriptions_module

GOOD = {"stages": ["a hand reaches for the lid", "the hand pushes the lid down", "the lid rests shut on the box"]}


# ----------------------------------------------------------------------------- test server


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):  # noqa: N802 - http.server API
        server = self.server
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        action = server.script.pop(0) if server.script else ("content", json.dumps(GOOD))
        kind, value = action
        try:
            if kind == "sleep":  # slow reply: longer than the client's timeout
                time.sleep(value)
                payload, status = {"choices": [{"message": {"content": json.dumps(GOOD)}}]}, 200
            elif kind == "status":
                payload, status = {"error": {"message": "boom"}}, value
            elif kind == "raw":
                data = value.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            else:
                payload = {
                    "id": "x",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": value},
                                 "finish_reason": "stop"}],
                }
                status = 200
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # client gave up (timeout test)
            pass


@contextmanager
def chat_server(script):
    """A real OpenAI-format HTTP server on 127.0.0.1, answering ``script`` in order.

    Bounded: it shuts itself down after 30 s even if a test forgets to.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.script = list(script)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    guard = threading.Timer(30.0, server.shutdown)
    guard.daemon = True
    guard.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        guard.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ----------------------------------------------------------------------------- validation


def test_parse_stages_accepts_exact_form_and_fence():
    assert D.parse_stages(json.dumps(GOOD), 3) == GOOD["stages"]
    fenced = "```json\n" + json.dumps(GOOD) + "\n```"
    assert D.parse_stages(fenced, 3) == GOOD["stages"]
    assert D.parse_stages('{"stages": ["  a   b ", "c", "d"]}', 3) == ["a b", "c", "d"]


@pytest.mark.parametrize(
    "reply, fragment",
    [
        ("not json at all", "not JSON"),
        ('["a", "b", "c"]', "not an object"),
        ('{"stages": ["a", "b"]}', "exactly 3"),
        ('{"stages": ["a", "b", "c", "d"]}', "exactly 3"),
        ('{"stages": ["a", "", "c"]}', "stage 1 is empty"),
        ('{"stages": ["a", 5, "c"]}', "stage 1 is a int"),
        ('{"stages": "a b c"}', "must be a list"),
        ('{"stages": ["a", "b", "c"], "extra": 1}', "exactly the key"),
        ('{"phases": ["a", "b", "c"]}', "exactly the key"),
    ],
)
def test_parse_stages_rejects(reply, fragment):
    with pytest.raises(ValueError, match=fragment):
        D.parse_stages(reply, 3)


def test_parse_stages_truncates_overlong():
    long = " ".join(["word"] * (D.MAX_WORDS + 10))
    out = D.parse_stages(json.dumps({"stages": [long, "b", "c"]}), 3)
    assert len(out[0].split()) == D.MAX_WORDS


def test_prompt_names_stages_label_and_schema():
    messages = D.build_messages("Closing something", 3)
    user = messages[-1]["content"]
    assert '"Closing something"' in user and "onset, progression, completion" in user
    assert '{"stages": [' in user and "subject" in user and "object" in user
    assert D.stage_names(3) == ["onset", "progression", "completion"]
    assert len(D.stage_names(5)) == 5


@pytest.mark.parametrize(
    "url",
    ["http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/", "http://h:1/v1/chat/completions"],
)
def test_chat_completions_url(url):
    assert D.chat_completions_url(url) == "http://h:1/v1/chat/completions"


def test_chat_completions_url_rejects_non_http():
    with pytest.raises(ValueError, match="http"):
        D.chat_completions_url("127.0.0.1:8000")


# ----------------------------------------------------------------------------- HTTP describer


def test_http_describer_good_reply_and_request_form():
    with chat_server([("content", json.dumps(GOOD))]) as (server, url):
        describer = D.ChatDescriber(url + "/v1", "tiny-model", retry_delay=0, api_key="k")
        assert describer.describe("Closing something", 3) == GOOD["stages"]
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    body = request["body"]
    assert body["model"] == "tiny-model" and body["temperature"] == 0
    assert body["response_format"] == {"type": "json_object"}
    assert "Closing something" in body["messages"][-1]["content"]
    assert request["headers"]["Authorization"] == "Bearer k"
    assert describer.source == "chat:tiny-model"


def test_http_describer_retries_malformed_then_succeeds_with_correction():
    script = [("content", "Sure! Here are the stages: onset..."), ("content", json.dumps(GOOD))]
    with chat_server(script) as (server, url):
        describer = D.ChatDescriber(url, "m", retries=2, retry_delay=0)
        assert describer.describe("Folding something", 3) == GOOD["stages"]
    assert len(server.requests) == 2
    second = server.requests[1]["body"]["messages"]
    # The re-ask shows the model its bad reply and says what was wrong.
    assert second[2] == {"role": "assistant", "content": "Sure! Here are the stages: onset..."}
    assert "not valid" in second[3]["content"] and "not JSON" in second[3]["content"]


def test_http_describer_gives_up_naming_class_and_last_reply():
    bad = json.dumps({"stages": ["only one"]})
    with chat_server([("content", bad)] * 3) as (server, url):
        describer = D.ChatDescriber(url, "m", retries=2, retry_delay=0)
        with pytest.raises(D.DescriptionError) as info:
            describer.describe("Holding something", 3)
    message = str(info.value)
    assert "'Holding something'" in message and "3 attempt(s)" in message
    assert "only one" in message and "exactly 3" in message
    assert len(server.requests) == 3  # bounded


def test_http_describer_non_openai_body_is_validated_not_crashing():
    with chat_server([("raw", "<html>oops</html>")] * 2) as (server, url):
        describer = D.ChatDescriber(url, "m", retries=1, retry_delay=0)
        with pytest.raises(D.DescriptionError, match="oops"):
            describer.describe("Closing something", 3)


def test_http_describer_slow_reply_times_out_then_retries():
    with chat_server([("sleep", 1.5), ("content", json.dumps(GOOD))]) as (server, url):
        describer = D.ChatDescriber(url, "m", timeout=0.3, retries=1, retry_delay=0)
        start = time.monotonic()
        assert describer.describe("Closing something", 3) == GOOD["stages"]
        assert time.monotonic() - start < 1.4  # did not wait for the slow reply
    with chat_server([("sleep", 1.0)] * 2) as (server, url):
        describer = D.ChatDescriber(url, "m", timeout=0.2, retries=1, retry_delay=0)
        with pytest.raises(D.DescriptionError, match=r"'Closing something'.*within 0.2 s"):
            describer.describe("Closing something", 3)


def test_http_describer_server_error_retried_client_error_not():
    with chat_server([("status", 503), ("content", json.dumps(GOOD))]) as (server, url):
        assert D.ChatDescriber(url, "m", retry_delay=0).describe("x", 3) == GOOD["stages"]
    with chat_server([("status", 404)]) as (server, url):
        with pytest.raises(D.DescriptionError, match=r"'x'.*HTTP 404"):
            D.ChatDescriber(url, "m", retries=3, retry_delay=0).describe("x", 3)
        assert len(server.requests) == 1


def test_http_describer_unreachable_server():
    with chat_server([]) as (server, url):
        pass  # closed: nothing listens on that port any more
    with pytest.raises(D.DescriptionError, match="cannot reach"):
        D.ChatDescriber(url, "m", retry_delay=0).describe("x", 3)


# ----------------------------------------------------------------------------- transformers describer


def _tiny_causal_lm(folder: Path) -> Path:
    """A random-init tiny GPT-2 with a byte-level BPE tokenizer trained offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(['{"stages": ["a person", "moves", "object"]} user system'] * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, n_embd=32, n_layer=1, n_head=2,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_transformers_describer_runs_real_model_and_reports_garbage(tmp_path):
    folder = _tiny_causal_lm(tmp_path / "tiny-lm")
    describer = D.TransformersDescriber(folder, max_new_tokens=8, retries=1)
    ids = describer.prompt_ids(D.build_messages("Closing something", 3))
    assert ids.dim() == 2 and ids.shape[1] > 20
    # A random model cannot answer in JSON: two attempts, then a clear error.
    with pytest.raises(D.DescriptionError, match=r"'Closing something'.*2 attempt"):
        describer.describe("Closing something", 3)
    # With a well-behaved generation the same path validates and returns the stages.
    replies = iter(["nonsense", json.dumps(GOOD)])
    describer.complete = lambda messages: next(replies)
    assert describer.describe("Closing something", 3) == GOOD["stages"]


def test_transformers_describer_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        D.TransformersDescriber(tmp_path / "nope")


# ----------------------------------------------------------------------------- cache + fallback


def test_template_fallback_documented_form():
    stages = D.TemplateDescriber().describe("Closing something", 3)
    assert stages == [
        "the start of closing something: a person begins the action",
        "the middle of closing something: a person carries out the action",
        "the end of closing something: a person completes the action",
    ]
    assert len(set(D.TemplateDescriber().describe("x", 5))) == 5
    assert D.TemplateDescriber().describe("ApplyEyeMakeup", 2)[0] == "the start of apply eye makeup: a person begins the action"
    with pytest.raises(D.DescriptionError, match="empty"):
        D.TemplateDescriber().describe("  ", 3)


def test_cache_roundtrip_and_atomic_write(tmp_path):
    path = tmp_path / "sub" / "cache.json"
    cache = D.DescriptionCache(path)
    cache.put("Closing something", GOOD["stages"], "chat:m")
    cache.put("Closing something", ["a", "b"], "manual")
    cache.save()
    assert [p.name for p in path.parent.iterdir()] == ["cache.json"]  # no temp files left
    again = D.DescriptionCache(path)
    assert again.get("Closing something", 3).stages == GOOD["stages"]
    assert again.get("Closing something", 2).source == "manual"
    assert again.get("Closing something", 4) is None
    data = json.loads(path.read_text())
    assert data["format"] == D.CACHE_FORMAT and set(data["descriptions"]["Closing something"]) == {"2", "3"}


def test_cache_save_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "cache.json"
    cache = D.DescriptionCache(path)
    cache.put("a", ["x", "y", "z"], "manual")
    cache.save()
    before = path.read_text()
    cache.put("b", ["x", "y", "z"], "manual")

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(descriptions_module.os, "replace", explode)
    with pytest.raises(OSError):
        cache.save()
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{", "cannot read JSON"),
        ('{"descriptions": {}}', "format"),
        ('{"format": "fsar-lga-descriptions", "version": 1, "descriptions": {"A": {"3": {"stages": ["x"]}}}}',
         "class 'A', L=3: 'stages' must hold exactly 3"),
        ('{"format": "fsar-lga-descriptions", "version": 1, "descriptions": {"A": {"x": {"stages": []}}}}',
         "positive integer"),
    ],
)
def test_cache_rejects_bad_files_naming_them(tmp_path, content, fragment):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=fragment) as info:
        D.DescriptionCache(path)
    assert str(path) in str(info.value)


class _Counting:
    source = "fake:llm"

    def __init__(self):
        self.calls = []

    def describe(self, class_name, num_stages):
        self.calls.append(class_name)
        return [f"{class_name} {i}" for i in range(num_stages)]


def test_load_descriptions_reads_cache_first_then_llm_then_writes(tmp_path, caplog):
    path = tmp_path / "c.json"
    cache = D.DescriptionCache(path)
    cache.put("A", ["edited a1", "edited a2", "edited a3"], "manual")
    cache.put("B", D.TemplateDescriber().describe("B", 3), D.TEMPLATE_SOURCE)
    cache.save()
    llm = _Counting()
    out = D.load_descriptions(["A", "B", "C"], cache_path=path, describer=llm)
    assert out["A"] == ["edited a1", "edited a2", "edited a3"]  # hand edit kept, LLM not asked
    assert llm.calls == ["B", "C"]  # template entry replaced once an LLM is available
    assert D.DescriptionCache(path).get("C", 3).source == "fake:llm"
    # Second run: everything cached, the LLM is not called again.
    llm2 = _Counting()
    assert D.load_descriptions(["A", "B", "C"], cache_path=path, describer=llm2) == out
    assert llm2.calls == []


def test_load_descriptions_template_fallback_says_so(tmp_path, caplog):
    path = tmp_path / "c.json"
    with caplog.at_level("WARNING"):
        out = D.load_descriptions(["Closing something"], cache_path=path)
    assert out["Closing something"][0].startswith("the start of closing something")
    assert "template fallback" in caplog.text and "Closing something" in caplog.text
    assert D.DescriptionCache(path).get("Closing something", 3).source == D.TEMPLATE_SOURCE


def test_read_class_names(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("Closing something\n\n  Folding something  \n")
    assert D.read_class_names(path) == ["Closing something", "Folding something"]
    path.write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="repeats line 1"):
        D.read_class_names(path)
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="no class names"):
        D.read_class_names(path)


def _args(*argv):
    parser = argparse.ArgumentParser()
    D.add_describer_arguments(parser)
    return parser.parse_args(list(argv))


def test_describer_from_args():
    assert D.describer_from_args(_args()) is None
    chat = D.describer_from_args(_args("--llm-url", "http://h:1/v1", "--llm-model", "m", "--llm-retries", "4"))
    assert isinstance(chat, D.ChatDescriber) and chat.retries == 4 and chat.url.endswith("/v1/chat/completions")
    with pytest.raises(ValueError, match="--llm-model"):
        D.describer_from_args(_args("--llm-url", "http://h:1"))
    with pytest.raises(ValueError, match="--llm-url"):
        D.describer_from_args(_args("--llm-model", "m"))
    with pytest.raises(ValueError, match="not set"):
        D.describer_from_args(_args("--llm-url", "http://h:1", "--llm-model", "m",
                                    "--llm-api-key-env", "FSAR_TEST_SURELY_UNSET_VARIABLE"))


def test_method_options_from_args_fills_cache_over_http(tmp_path):
    path = tmp_path / "c.json"
    with chat_server([("content", json.dumps(GOOD))] * 2) as (server, url):
        args = _args("--descriptions", str(path), "--llm-url", url, "--llm-model", "m")
        options = D.method_options_from_args(args, ["A", "B"])
    assert options["descriptions"] == {"A": GOOD["stages"], "B": GOOD["stages"]}
    assert isinstance(options["describer"], D.ChatDescriber)
    assert D.DescriptionCache(path).get("B", 3).source == "chat:m"
    # Without class names: the cache as it stands.
    options = D.method_options_from_args(_args("--descriptions", str(path)))
    assert set(options["descriptions"]) == {"A", "B"} and options["describer"] is None


def test_method_options_from_args_reads_num_stages_option(tmp_path):
    path = tmp_path / "c.json"
    args = _args("--descriptions", str(path))
    args.method_options = [("num_stages", 2)]
    options = D.method_options_from_args(args, ["A"])
    assert len(options["descriptions"]["A"]) == 2
    assert D.DescriptionCache(path).get("A", 2) is not None
