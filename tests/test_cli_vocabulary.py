"""One vocabulary across the ``fsar`` commands: the same flag means the same thing everywhere,
and the fsar 0.1 spellings still work for one release, saying on stderr what replaces them."""

from __future__ import annotations

import argparse
import json

import pytest

from fsar.cli import build_parser, main
from fsar.cli._args import add_methods_own_options, method_args_from, parse_option, resolve_device
from fsar.cli import CLIError


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
    return dict(action.choices)


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    parser.format_help()  # adds deferred arguments (the methods' own options)
    return {flag for action in parser._actions for flag in action.option_strings}  # noqa: SLF001


COMMANDS = _subparsers(build_parser())
COMMANDS["data check"] = _subparsers(COMMANDS["data"])["check"]

READS_DATA = ["train", "eval", "predict", "extract", "data check"]
COMPUTES = ["train", "eval", "predict", "extract", "demo", "describe"]  # describe: a local LLM
BUILDS_A_METHOD = ["train", "eval", "predict", "info", "demo"]
DRAWS_PROGRESS = ["train", "eval", "extract", "data check", "demo", "describe"]
WRITES_JSON = ["train", "eval", "predict", "info", "data check", "demo"]


@pytest.mark.parametrize("command", READS_DATA)
def test_data_root_is_data_everywhere(command):
    assert "--data" in _flags(COMMANDS[command])


@pytest.mark.parametrize("command", COMPUTES)
def test_device_everywhere_it_computes(command):
    assert "--device" in _flags(COMMANDS[command])


@pytest.mark.parametrize("command", BUILDS_A_METHOD)
def test_method_options_everywhere_a_method_is_built(command):
    assert "-O" in _flags(COMMANDS[command])


@pytest.mark.parametrize("command", DRAWS_PROGRESS)
def test_no_progress_everywhere_bars_are_drawn(command):
    parser = COMMANDS[command]
    assert "--no-progress" in _flags(parser)


@pytest.mark.parametrize("command", WRITES_JSON)
def test_json_takes_a_path(command):
    assert "--json" in _flags(COMMANDS[command])


@pytest.mark.parametrize("command", ["train", "eval", "predict"])
def test_the_methods_own_options_are_offered(command):
    flags = _flags(COMMANDS[command])
    assert {"--descriptions", "--llm-url", "--llm-model", "--llm-timeout"} <= flags


def test_method_own_options_are_typed_and_only_given_ones_are_kept():
    parser = build_parser()
    args = parser.parse_args(["eval", "--data", "d", "--llm-timeout", "5", "--llm-no-json-mode"])
    assert method_args_from(args) == {"llm_timeout": 5.0, "llm_no_json_mode": True}
    assert method_args_from(parser.parse_args(["eval", "--data", "d"])) == {}


def test_a_bad_method_option_type_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["eval", "--data", "d", "--llm-timeout", "soon"])
    assert stop.value.code == 2 and "--llm-timeout" in capsys.readouterr().err


def test_two_methods_declaring_one_option_differently_is_refused(monkeypatch):
    import fsar.methods
    from fsar.cli._args import DeferredParser
    from fsar.methods import MethodOption

    monkeypatch.setattr(fsar.methods, "method_options", lambda: {
        "a": (MethodOption("shared", int, default=1),), "b": (MethodOption("shared", float, default=1.0),)})
    parser = DeferredParser()
    add_methods_own_options(parser)
    with pytest.raises(ValueError, match="method 'b' declares option --shared unlike method 'a'"):
        parser.format_help()


def test_parse_option_and_device():
    assert parse_option("alpha=0.25") == ("alpha", 0.25)
    assert parse_option("encoder_options={width: 32}") == ("encoder_options", {"width": 32})
    assert parse_option("name=") == ("name", "")
    with pytest.raises(CLIError, match="KEY=VALUE"):
        parse_option("novalue")
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(CLIError, match="--device nonsense"):
        resolve_device("nonsense")


# ----------------------------------------------------------------------------- behaviour


def test_data_check_json_path_writes_and_dash_prints(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["data", "check", "--data", str(tiny_dataset), "--way", "2", "--json", str(out),
                 "--no-progress", "--no-duplicates"]) == 0
    written = json.loads(out.read_text())
    capsys.readouterr()
    assert main(["data", "check", "--data", str(tiny_dataset), "--way", "2", "--json", "-",
                 "--no-progress", "--no-duplicates"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == written and not (tmp_path / "-").exists()


def test_old_positional_data_root_still_works_and_says_so(tiny_dataset, capsys):
    assert main(["data", "check", str(tiny_dataset), "--way", "2", "--no-progress", "--no-duplicates"]) == 0
    captured = capsys.readouterr()
    assert "9 classes" in captured.out or "classes" in captured.out
    assert "deprecated" in captured.err and "--data ROOT" in captured.err


def test_a_missing_data_root_is_named(capsys):
    assert main(["data", "check", "--no-progress"]) == 2
    assert "--data ROOT" in capsys.readouterr().err


def test_two_data_roots_are_refused(tiny_dataset, capsys):
    assert main(["data", "check", str(tiny_dataset), "--data", "/elsewhere", "--no-progress"]) == 2
    assert "two data roots" in capsys.readouterr().err


def test_old_option_flag_and_bare_json_still_work_and_say_so(capsys):
    assert main(["info", "proto", "--option", "metric=otam", "--weights", "random", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["name"] == "proto"
    assert "--option is deprecated" in captured.err and "-O KEY=VALUE" in captured.err
    assert "a bare --json is deprecated" in captured.err


def test_info_json_path_writes_a_file(tmp_path, capsys):
    out = tmp_path / "info.json"
    assert main(["info", "proto", "-O", "metric=otam", "--weights", "random", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["kind"] == "method"


def test_predict_old_support_flag_still_works_and_says_so(tiny_dataset, capsys):
    query = str(tiny_dataset / "class01" / "clip0")
    assert main(["predict", "--support", str(tiny_dataset), "--query", query, "--method", "proto",
                 "--backbone", "clip-vit-b32", "--weights", "random", "-O",
                 "encoder_options={image_size: 32, patch_size: 16, width: 32, vision_layers: 1, heads: 2, "
                 "text_width: 32, text_layers: 1, text_heads: 2, projection_dim: 16, vocab_size: 64}",
                 "--frames", "4", "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["method"] == "proto"
    assert "--support is deprecated" in captured.err and "--data" in captured.err
