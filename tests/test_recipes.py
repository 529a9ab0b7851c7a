"""Recipes: the papers' hyper-parameters per method x benchmark x shot, each value with its source."""

from __future__ import annotations

import dataclasses
import re
import runpy
from pathlib import Path

import pytest

from fsar.cli import main
from fsar.data.splits import list_benchmarks
from fsar.engine.config import EvalConfig, TrainConfig, resolve_config
from fsar.recipes import RecipeError, list_recipes, load_recipe, recipe_directory

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO.parent / "shared" / "papers" / "ma-fsar_full-paper.txt"
METHODS = ("ma-fsar", "clip-fsar", "lga", "clip-spm", "fsar-llava")


def test_a_recipe_for_every_method_benchmark_and_shot():
    names = {r.name for r in list_recipes()}
    expected = {f"{m}/{b.name}-{k}shot" for m in METHODS for b in list_benchmarks() for k in (1, 5)}
    assert names == expected
    for recipe in list_recipes():
        assert recipe.path.parent.name == recipe.method and recipe.train["shot"] == recipe.shot
        assert recipe.train["method"] == recipe.method and recipe.evaluate["shot"] == recipe.shot


def test_the_files_are_what_the_generator_writes():
    generator = runpy.run_path(str(REPO / "scripts" / "make_recipes.py"))
    written = generator["recipes"]()
    assert len(written) == 50
    for path, text in written.items():
        shipped = recipe_directory() / path.parent.name / path.name
        assert shipped.read_text() == text, f"{shipped} differs from scripts/make_recipes.py; re-run it"


def test_every_value_names_its_source():
    for recipe in list_recipes():
        section = None
        for number, line in enumerate(recipe.path.read_text().splitlines(), start=1):
            if re.match(r"^[a-z_]+:\s*(#.*)?$", line):
                section = line.split(":")[0]
            if section in ("train", "evaluate", "reported") and re.match(r"^\s+[a-z0-9_-]+: \S", line):
                comment = line.partition("  # ")[2]
                assert re.match(r"\[(paper|spec): \S|\[ours|\[not public\]", comment), f"{recipe.path}:{number}: {line}"


@pytest.mark.parametrize("recipe", list_recipes(), ids=lambda r: r.name)
def test_values_are_valid_config_keys_and_method_options(recipe):
    from fsar.methods.clip_fsar import CLIPFSARConfig
    from fsar.methods.clip_spm import CLIPSPMConfig
    from fsar.methods.fsar_llava import FSARLLaVAConfig
    from fsar.methods.lga import LGAConfig
    from fsar.methods.ma_fsar import MAFSARConfig

    train = resolve_config(TrainConfig, overrides={**recipe.train_values(), "data": "d"})
    assert train.split_file_dir == recipe.benchmark and train.method == recipe.method
    evaluation = resolve_config(EvalConfig, overrides={**recipe.eval_values(), "data": "d"})
    assert evaluation.episodes == 10_000 and evaluation.queries == 1 and evaluation.split_file == recipe.benchmark
    config = {"ma-fsar": MAFSARConfig, "clip-fsar": CLIPFSARConfig, "lga": LGAConfig, "clip-spm": CLIPSPMConfig,
              "fsar-llava": FSARLLaVAConfig}[recipe.method]
    fields = {f.name for f in dataclasses.fields(config)}
    assert set(train.method_options) <= fields
    options = {k: v for k, v in train.method_options.items() if k not in ("finetune", "encoder_options")}
    config(backbone=train.backbone, **options).validate()  # every value one the method takes


def test_the_new_methods_recipes_carry_their_sources_settings():
    from fsar.encoders.mllm import PROMPT_SETS, resolve_layer
    from fsar.methods.clip_spm import OPTIMIZER_PRESETS, PRESETS

    for recipe in list_recipes():
        temporal = recipe.benchmark.startswith("ssv2")
        if recipe.method == "clip-spm":  # the release (spec section 6)
            options = recipe.train["method_options"]
            assert options["preset"] in PRESETS and recipe.train["queries"] == 4 and recipe.train["seed"] == 6
            assert recipe.train["episodes"] == (100_010 if temporal else 20_010) and recipe.train["lr_milestones"] == []
            optimiser = OPTIMIZER_PRESETS[options["preset"]]
            assert (recipe.train["lr"], recipe.train["weight_decay"]) == (optimiser["lr"], optimiser["weight_decay"])
            assert recipe.train["hflip"] is (not temporal) and options["padm"] == "transductive"
        if recipe.method == "fsar-llava":  # the video-llava backbone options, as the spec names them
            backbone = recipe.train["method_options"]["encoder_options"]
            assert resolve_layer(backbone["layer"], 32) == 24 and backbone["text_pooling"] == "last"
            assert backbone["prompts"] == ("ssv2" if temporal else "generic") and backbone["prompts"] in PROMPT_SETS
            assert recipe.train["backbone"] == "video-llava" and recipe.train["num_frames"] == 8
    assert load_recipe("clip-spm/ssv2-full-5shot").reported == {"clip-vit-b16": 77.3}
    assert load_recipe("clip-spm/ssv2-full-1shot").train["lr"] == 1.6e-5
    assert load_recipe("fsar-llava/ucf101-5shot").reported == {"video-llava": 99.9}
    assert load_recipe("fsar-llava/ucf101-1shot").reported == {"video-llava": None}


def test_the_papers_settings_per_benchmark():
    for recipe in list_recipes():
        temporal = recipe.benchmark.startswith("ssv2")
        if recipe.method == "clip-spm":  # its release's own counts (test_the_new_methods_recipes...)
            continue
        assert recipe.train["episodes"] == (100_000 if temporal else 10_000)
        assert recipe.train["num_frames"] == 8 and recipe.train["way"] == 5
        if recipe.method == "ma-fsar":
            assert recipe.train["method_options"]["alpha"] == (0.25 if temporal else 0.75)  # MA-FSAR 4.1.2
        if recipe.method == "lga":
            assert recipe.train["hflip"] is (not temporal)
    assert load_recipe("ma-fsar/ssv2-small-1shot").reported == {"clip-vit-b16": 59.1, "clip-vit-b32": 56.5}
    assert load_recipe("lga/ucf101-5shot").reported == {"clip-vit-b16": None}


TABLES = REPO / "tests" / "papers" / "ma-fsar_tables_1_2.tsv"


def test_reported_accuracies_are_the_papers_table_rows():
    """Each MA-FSAR / CLIP-FSAR number stands in the row of its table, in its benchmark's column
    (the rows ship in tests/papers/, copied from the paper)."""
    rows: dict[tuple[str, str], list[list[str]]] = {}
    for line in TABLES.read_text().splitlines():
        cells = line.split("\t")
        if len(cells) > 8 and cells[0].startswith(("MA-FSAR", "CLIP-FSAR")):
            key = ("ma-fsar" if cells[0].startswith("MA") else "clip-fsar", cells[2])
            rows.setdefault(key, []).append([re.sub(r"<[^>]+>|\^a", "", c).strip() for c in cells[4:]])
    # Table 1 columns: HMDB51 1/5, UCF101 1/5, Kinetics 1/5; Table 2: SSv2-Small 1/5, SSv2-Full 1/5
    columns = {"hmdb51": (0, 0), "ucf101": (0, 2), "kinetics-100": (0, 4), "ssv2-small": (1, 0), "ssv2-full": (1, 2)}
    backbones = {"clip-vit-b16": "CLIP-ViT-B/16", "clip-vit-b32": "CLIP-ViT-B/32"}
    checked = 0
    for recipe in list_recipes():
        if recipe.method not in ("ma-fsar", "clip-fsar"):  # not in MA-FSAR's tables
            continue
        table, column = columns[recipe.benchmark]
        for backbone, value in recipe.reported.items():
            row = rows[(recipe.method, backbones[backbone])][table]
            assert float(row[column + (0 if recipe.shot == 1 else 1)]) == value, (recipe.name, backbone)
            checked += 1
    assert checked == 30


@pytest.mark.skipif(not PAPER.is_file(), reason="../shared/papers absent: the shipped rows are checked above")
def test_the_shipped_table_rows_are_the_papers():
    paper = set(PAPER.read_text().splitlines())
    rows = [line for line in TABLES.read_text().splitlines() if not line.startswith(("#", "["))]
    assert len(rows) == 10 and all(row in paper for row in rows)


def test_unknown_recipes_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(RecipeError, match="unknown recipe 'ma-fsar/ssv3-1shot'.*ma-fsar/hmdb51-1shot"):
        load_recipe("ma-fsar/ssv3-1shot")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: proto\n")
    with pytest.raises(RecipeError, match="'train:' section"):
        load_recipe(str(bad))
    own = tmp_path / "mine.yaml"
    own.write_text("method: otam\ntrain:\n  episodes: 5\n")
    assert load_recipe(str(own)).train == {"episodes": 5}


def test_cli_lists_and_prints_recipes(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "ma-fsar/ssv2-small-1shot" in out and "lga/hmdb51-5shot" in out and "clip-vit-b32 56.5" in out
    assert "clip-spm/ssv2-full-5shot" in out and "fsar-llava/ucf101-5shot" in out
    assert main(["recipes", "clip-fsar/kinetics-100-5shot"]) == 0
    assert "# [paper: ma-fsar_full-paper.txt" in capsys.readouterr().out
    assert main(["recipes", "nope/x"]) == 2


def test_train_resolves_a_recipe_with_overrides(tmp_path):
    """`fsar train --recipe` on the synthetic set: the recipe's values stand unless a flag overrides them."""
    import json

    import yaml
    from engine_standins import TINY_CLIP

    from fsar.data.manifest import Manifest
    from fsar.data.synth import render_dataset

    data = render_dataset(tmp_path / "synth", classes=6, videos_per_class=6, frames=8, size=32, progress=False)
    manifest = Manifest.from_folder(data)
    splits = tmp_path / "splits"
    splits.mkdir()
    for part, names in (("train", manifest.classes[:3]), ("val", manifest.classes[3:])):
        (splits / f"{part}.txt").write_text(
            "".join(f"{c.class_name}/{c.path.name}\n" for n in names for c in manifest.clips_of(n)))
    out = tmp_path / "run"
    assert main(["train", "--recipe", "ma-fsar/ssv2-small-1shot", "--data", str(data), "--splits", str(splits),
                 "--backbone", "clip-vit-b32", "--weights", "random", "-O", TINY_CLIP, "-O", "finetune=frozen",
                 "--image-size", "32", "--way", "3", "--episodes", "4", "--tasks-per-step", "2", "--val-every", "2",
                 "--val-episodes", "2", "--no-progress", "--out", str(out)]) == 0
    saved = next(json.loads(p.read_text())["config"] for p in (out / "best.json", out / "last.json") if p.is_file())
    recipe = load_recipe("ma-fsar/ssv2-small-1shot")
    assert saved["method"] == "ma-fsar" and saved["lr"] == recipe.train["lr"] and saved["hflip"] is True
    assert saved["queries"] == 5 and saved["lr_milestones"] == [0.6, 0.8]  # from the recipe
    assert (saved["episodes"], saved["way"], saved["image_size"], saved["split_file_dir"]) == (4, 3, 32, str(splits))
    options = saved["method_options"]
    assert options["alpha"] == 0.25 and options["metric"] == "otam"  # kept beside the -O overrides
    assert options["finetune"] == "frozen" and options["encoder_options"] == yaml.safe_load(TINY_CLIP.split("=", 1)[1])


def test_a_recipe_typo_names_the_recipe(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: otam\ntrain:\n  episodez: 5\n")
    assert main(["train", "--recipe", str(bad), "--data", str(tmp_path)]) == 2
    assert "recipe bad: unknown key 'episodez'" in capsys.readouterr().err
