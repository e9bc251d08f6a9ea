"""Bounded work on hostile input (issue 14, sections 4 and 5's DICOM items): a frame-size limit
read from headers before decoding, sampling that allocates by the frames a clip has, recipes
and locks of bounded size and depth (YAML aliases counted expanded), folds that cannot stay
empty, an inherited release of another recipe said so, and DICOM views, regions and transfer
syntaxes that are reported, never dropped or misnamed in silence."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from us4.cli import main
from us4.errors import RecipeError
from us4.media import SamplingPolicy
from us4.media.phantom import write_phantom_clip
from us4.recipe import MAX_RECIPE_BYTES, load_recipe, packaged_recipes, parse_recipe


def recipe_file(tmp: Path, name: str = "r.yaml", top: dict | None = None, **source) -> Path:
    """A recipe of one declared video source `clips` (classes a and b from file-name prefixes)."""
    spec = {"organ": "lung", "probe": "convex", "input": "video", "classes": ["a", "b"], "label": {"prefix": True},
            "sampling": {"every_n": 4}, "text": "off", **source}
    raw = {"name": "bounds", "version": "0.0.1", "seed": 1, "sources": {"clips": spec}, "dedup": {"threshold": 0},
           "splits": {"kind": "holdout", "validation": 0.5}, **(top or {})}
    path = tmp / name
    path.write_text(yaml.safe_dump(raw))
    return path


def videos(folder: Path, names: list[str], size: tuple[int, int] = (96, 64)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        write_phantom_clip(folder / name, seed=i, n_frames=8, size=size, text=None)
    return folder


def one_line_error(result) -> str:
    """The CLI's answer to bad input: exit 1 and exactly one line, `us4: error: ...`."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("us4: error: "), result.output
    return lines[0]


# --- recipes: size, depth, aliases, types ---------------------------------------------------


def alias_bomb(tmp: Path) -> Path:
    """trust.sh's recipe: a 504-byte description that YAML aliases expand 9^7 times."""
    levels = ["&a0 [" + ",".join(["lol"] * 9) + "]"] + [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]"
                                                        for i in range(1, 7)]
    path = recipe_file(tmp, "bomb.yaml", top={"description": "trust check"})
    path.write_text("\n".join("description: [" + ", ".join(levels) + "]" if line.startswith("description:") else line
                              for line in path.read_text().splitlines()) + "\n")
    return path


def test_yaml_aliases_count_at_their_expanded_size(tmp_path):
    bomb = alias_bomb(tmp_path)
    assert "description: [&a0" in bomb.read_text()
    result = CliRunner().invoke(main, ["build", str(bomb), "--raw", f"clips={tmp_path}", "--out", str(tmp_path / "o")])
    assert "its YAML aliases expand it past 1,048,576 bytes" in one_line_error(result)
    assert not (tmp_path / "o").exists()
    endless = recipe_file(tmp_path, "endless.yaml")
    endless.write_text(endless.read_text().replace("classes:", "x: &me [*me]\n    classes:"))
    with pytest.raises(RecipeError, match=r"the YAML alias \*me on line \d+ lies inside the value it names"):
        load_recipe(endless)
    shared = tmp_path / "shared.yaml"  # an anchor shared by two sources is fine
    shared.write_text("name: s\nversion: '1'\nsources:\n"
                      "  one: &src {organ: lung, classes: [a], label: {constant: a}, sampling: {every_n: 2}}\n"
                      "  two: *src\n")
    recipe = load_recipe(shared)
    assert recipe.sources["one"].sampling == recipe.sources["two"].sampling and len(recipe.sources) == 2


def test_recipe_size_depth_and_strings_are_bounded(tmp_path):
    big = recipe_file(tmp_path, "big.yaml", top={"description": "x" * MAX_RECIPE_BYTES})
    with pytest.raises(RecipeError, match=r"a recipe holds at most 1,048,576 bytes, this file has 1,04\d,\d{3}"):
        load_recipe(big)
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: d\nversion: '1'\nsources: " + "[" * 200_000 + "]" * 200_000 + "\n")
    with pytest.raises(RecipeError, match="nested more than 12 levels deep"):
        load_recipe(deep)
    good = yaml.safe_load(recipe_file(tmp_path).read_text())
    for change, message in (({"description": "d" * 20_001}, "description: 20,001 characters; at most 20,000"),
                            ({"description": ["a", "list"]}, "description must be text, got list"),
                            ({"name": "n" * 5000}, "name: 5,000 characters; at most 4,096"),
                            ({"seed": 2 ** 70}, "a whole number of more than 64 bits"),
                            ({"seed": "7"}, "seed must be a whole number"),
                            ({"dedup": {"threshold": float("nan")}}, "dedup.threshold: nan is not a finite number"),
                            ({"output": {"shard_max_mb": float("inf")}}, "output.shard_max_mb: inf is not a finite")):
        with pytest.raises(RecipeError, match=message):
            parse_recipe({**good, **change})


def test_shipped_recipes_stay_well_within_the_bounds():
    for path in packaged_recipes():
        assert path.stat().st_size < MAX_RECIPE_BYTES / 100
        load_recipe(path)


# --- sampling -------------------------------------------------------------------------------


def test_sampling_allocates_by_the_frames_a_clip_has():
    tracemalloc.start()
    try:
        kept = SamplingPolicy(evenly=1_000_000).indices(32, 30.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert kept == list(range(32)) and peak < 100_000  # a million spots would take 8 MB for 32 frames
    assert SamplingPolicy(evenly=40).indices(100, 25.0) == SamplingPolicy(evenly=40).indices(100, 25.0)
    assert SamplingPolicy(rate_hz=0.001).indices(10, 9999.0) == [0]


@pytest.mark.parametrize("sampling, message", [
    ("{evenly: 100000000}", "evenly must be a whole number from 1 to 1,000,000, got 100000000"),
    ("{evenly: 100000000000}", "evenly must be a whole number from 1 to 1,000,000"),
    ("{evenly: 1e11}", "evenly must be a whole number from 1 to 1,000,000, got '1e11'"),
    ("{evenly: 1.0e+11}", "evenly must be a whole number"),
    ("{every_n: 2.5}", "every_n must be a whole number"),
    ("{rate_hz: 1.0e-320}", "rate_hz must be a number of frames per second from 0.001 to 10,000"),
    ("{rate_hz: .inf}", "sources.clips.sampling.rate_hz: inf is not a finite number"),
])
def test_absurd_sampling_is_one_recipe_error(tmp_path, sampling, message):
    path = recipe_file(tmp_path)
    path.write_text(path.read_text().replace("sampling:\n      every_n: 4", f"sampling: {sampling}"))
    result = CliRunner().invoke(main, ["build", str(path), "--raw", f"clips={tmp_path}", "--out", str(tmp_path / "o")])
    assert message in one_line_error(result)
