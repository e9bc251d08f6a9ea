"""The recipe is typed end to end: its split rule is Folds | Holdout, the lock holds the typed
recipe (an older lock's as it was recorded), and what is rendered from it keeps its bytes."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from us4.cli import main
from us4.contract.card import CARD_FORMAT, render_card
from us4.contract.croissant import render_croissant
from us4.contract.lock import FORMAT_V1, LockError, dump_lock, read_lock
from us4.errors import RecipeError
from us4.hashing import sha256_json
from us4.recipe import Folds, Holdout, Recipe, load_recipe

from .test_trust_bounds import one_line_error, recipe_file

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((REPO / "manifests").glob("*.json"))
FIXTURE_V1 = REPO / "tests" / "fixtures" / "release-0.1.0" / "release.json"


def test_a_split_key_of_the_other_kind_is_one_line_naming_the_recipe_and_the_key(tmp_path):
    # a holdout given k silently built a holdout; folds given validation silently ignored it
    recipe = recipe_file(tmp_path, top={"splits": {"kind": "holdout", "validation": 0.2, "k": 5}})
    result = CliRunner().invoke(main, ["build", str(recipe), "--raw", f"clips={tmp_path}", "--out",
                                       str(tmp_path / "o"), "--quiet"])
    assert one_line_error(result) == (f"us4: error: {recipe}: splits.k is a key of kind folds, not holdout (a holdout "
                                      "split takes validation)")
    assert not (tmp_path / "o").exists()
    folds = recipe_file(tmp_path, "f.yaml", top={"splits": {"kind": "folds", "k": 5, "validation": 0.2}})
    with pytest.raises(RecipeError, match=f"^{folds}: splits.validation is a key of kind holdout, not folds"):
        load_recipe(folds)


def test_the_split_rule_is_typed_and_names_its_splits():
    holdout = read_lock(FIXTURE_V1.read_bytes()).recipe.splits
    assert holdout == Holdout(validation=0.5) and holdout.weights() == {"train": 1, "validation": 1}
    assert holdout.fold("train") is None
    pocus = load_recipe("pocus").splits
    assert isinstance(pocus, Folds) and pocus.k == 5 and pocus.near_duplicates
    assert pocus.group_columns == ("Source ID", "Patient ID / Name") and pocus.inherit == "pocus-1.1.0"
    assert list(pocus.weights()) == [f"fold{i}" for i in range(5)] and pocus.fold("fold3") == 3
    blues = load_recipe("blues").splits
    assert blues.group_columns == ("patient_id",) and not blues.near_duplicates
    assert blues.to_dict() == {"kind": "folds", "k": 5, "group_column": "patient_id"}  # as written: a str stays one


@pytest.mark.parametrize("path", [*MANIFESTS, FIXTURE_V1], ids=lambda p: p.parent.name + "/" + p.name)
def test_every_shipped_lock_holds_a_typed_recipe_and_writes_it_back_unchanged(path):
    data = path.read_bytes()
    lock = read_lock(data)
    assert isinstance(lock.recipe, Recipe) and isinstance(lock.recipe.splits, (Folds, Holdout))
    recorded = json.loads(data)["recipe"]
    assert lock.recipe.as_recorded() == recorded
    assert lock.recipe.sha256 == lock.recipe_sha256 == sha256_json(recorded)
    if lock.source_format == FORMAT_V1:  # upgraded in memory: named by the file as published
        assert lock.sha256 == sha256_json(json.loads(data))
    else:
        assert dump_lock(lock) == data


def test_an_older_lock_s_recipe_reads_typed_with_today_s_defaults():
    old = read_lock((REPO / "manifests" / "pocus-1.0.0.json").read_bytes())
    assert old.recipe.recorded is not None  # us4 0.1.0 stated fewer defaults than to_dict() does
    assert old.recipe.to_dict() != old.recipe.recorded
    assert old.recipe.sources["pocus"].max_frame_pixels == 4096 * 4096 and old.recipe.splits == Folds(k=5)
    v1 = read_lock(FIXTURE_V1.read_bytes())
    assert sorted(v1.recipe.sources) == ["butterfly"] and {s.source for s in v1.shards} == {"butterfly"}


@pytest.mark.parametrize("name, manifest", [("pocus", "pocus-1.2.0"), ("blues", "blues-1.0.0")])
def test_the_shipped_recipe_is_its_manifest_s_and_renders_its_card_and_croissant(name, manifest):
    lock = read_lock((REPO / "manifests" / f"{manifest}.json").read_bytes())
    recipe = load_recipe(name)
    assert recipe.recorded is None and lock.recipe.recorded is None
    assert recipe == lock.recipe and recipe.sha256 == lock.recipe_sha256
    # the card and Croissant read the typed recipe: rendered again, the bytes the manifest records
    assert lock.generated["README.md"].format == CARD_FORMAT
    card = render_card(lock, lambda name: pytest.fail(f"reads no attachment, asked for {name}"))
    assert hashlib.sha256(card.encode()).hexdigest() == lock.generated["README.md"].sha256
    assert hashlib.sha256(render_croissant(lock)).hexdigest() == lock.generated["croissant.json"].sha256


def test_a_lock_whose_recipe_is_mistyped_is_one_line_naming_the_key():
    raw = json.loads((REPO / "manifests" / "blues-1.0.0.json").read_bytes())
    raw["recipe"]["splits"]["group_colum"] = "patient_id"
    with pytest.raises(LockError) as err:
        read_lock(json.dumps(raw), where="blues/release.json")
    assert str(err.value) == ("blues/release.json: invalid us4-release/3 lock: recipe: splits: unknown keys "
                              "['group_colum']; known: ['group', 'group_column', 'inherit', 'k', 'kind', 'validation']")
