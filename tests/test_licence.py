"""Licence terms are data (issue 15, the licence item): terms read from a licence's text; the card's
first screen says when a source forbids derivatives (ND) or commercial use (NC), or is licensed per
clip."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from us4.builder import build_release
from us4.contract.card import render_card
from us4.media.phantom import write_phantom_clip
from us4.phantom_corpus import make_pocus_corpus
from us4.registry import licence_terms
from us4.release.read import open_release

ND_LICENCE = "CC BY-NC-ND 4.0"


def body(card: str) -> str:
    """The card without its YAML header."""
    return card.split("\n---\n", 1)[1]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("raw_licence")
    for i, name in enumerate(["cov_a.mp4", "cov_b.mp4", "reg_a.mp4", "reg_b.mp4"]):
        write_phantom_clip(folder / name, seed=i, n_frames=12)
    return folder


def build(raw: Path, out: Path, licence: str, name: str = "nd", version: str = "1.0.0") -> Path:
    """A release of one source `src` that the registry does not know, declaring its licence."""
    spec = {"organ": "lung", "probe": "convex", "input": "video", "classes": ["cov", "reg"], "licence": licence,
            "label": {"prefix": True}, "sampling": {"every_n": 4, "max_frames": 3}, "crop": "none", "text": "off"}
    recipe = out.parent / f"{out.name}.yaml"
    recipe.write_text(yaml.safe_dump({"name": name, "version": version, "seed": 1, "sources": {"src": spec},
                                      "dedup": {"threshold": 0}, "splits": {"kind": "holdout", "validation": 0.5},
                                      "output": {"png_compress_level": 1}}))
    build_release(recipe, {"src": raw}, out, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def nd_release(raw, tmp_path_factory) -> Path:
    return build(raw, tmp_path_factory.mktemp("nd") / "nd", ND_LICENCE)


@pytest.fixture(scope="module")
def pocus_per_clip(tmp_path_factory) -> Path:
    """A phantom POCUS release whose sheet gives its convex clips a licence each: one ND (and NC), one
    NC, one in words no parser reads, the rest CC BY 4.0."""
    tmp = tmp_path_factory.mktemp("pocus_licence")
    data = make_pocus_corpus(tmp / "raw", clips_per_class=2, n_frames=12)
    sheet = data / "dataset_metadata.csv"
    rows = list(csv.DictReader(sheet.open()))
    licences = {"Cov_phantom_00": ND_LICENCE, "Cov_phantom_01": "CC BY-NC -SA 4.0",
                "Pneu_phantom_00": "COVID-19 emergency license"}
    for row in rows:
        row["License"] = licences.get(row["Filename"], row["License"])
    with sheet.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    recipe = {"name": "pocus-licences", "version": "1.0.0", "seed": 1,
              "sources": {"pocus": {"probes": ["convex"], "classes": ["covid", "pneumonia", "regular"],
                                    "sampling": {"every_n": 4, "max_frames": 2}, "crop": "none", "text": "off"}},
              "dedup": {"threshold": 0}, "splits": {"kind": "holdout", "validation": 0.5},
              "output": {"png_compress_level": 1}}
    (tmp / "r.yaml").write_text(yaml.safe_dump(recipe))
    build_release(tmp / "r.yaml", {"pocus": data}, tmp / "rel", workers=1, progress=False)
    return tmp / "rel"


# --- terms -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, terms", [
    ("CC BY-NC-ND 4.0", {"NC", "ND"}),
    ("CC-BY-NC-ND", {"NC", "ND"}),
    ("by-nc-nd", {"NC", "ND"}),
    ("CC BY-NC-SA 4.0", {"NC", "SA"}),
    ("CC BY-NC -SA 4.0", {"NC", "SA"}),  # as POCUS's sheet spells it
    ("CC BY-NC 4.0", {"NC"}),
    ("Attribution-NonCommercial-NoDerivatives 4.0 International", {"NC", "ND"}),
    ("CC BY 4.0", set()),
    ("CC BY 2.0", set()),
    ("CC0", set()),
    ("CC0 1.0 Universal", set()),
    ("None", None),
    ("", None),
    ("COVID-19 emergency license", None),
    ("not CC BY-NC-ND", None),  # a sentence that mentions a licence is no licence
    ("by", None),
    ("Butterfly Network COVID-19 gallery terms (research use; redistribution of frames not granted)", None),
    ("CC BY-NC-ND 4.0 " + "x" * 300, None),
])
def test_licence_terms_are_read_from_the_licence_text(text, terms):
    assert licence_terms(text) == (None if terms is None else frozenset(terms))


# --- the card's first screen --------------------------------------------------------------


def test_card_first_screen_says_when_a_source_forbids_derivatives_or_commercial_use(nd_release):
    rel = open_release(nd_release)
    card = body((nd_release / "README.md").read_text())
    first_screen = card.split("## Sources")[0]
    assert ("**Licence: no derivatives.** The source src is licensed CC BY-NC-ND 4.0, which forbids sharing "
            "derivatives (ND)") in first_screen
    assert "`us4 publish --lock-only`" in first_screen and "also forbids commercial use (NC)" in first_screen

    def card_with(licence: str) -> str:
        recipe = json.loads(json.dumps(rel.lock.recipe))
        recipe["sources"]["src"]["licence"] = licence
        return body(render_card(rel.lock.model_copy(update={"recipe": recipe}), lambda p: rel.path(p).read_bytes()))

    nc = card_with("CC BY-NC 4.0").split("## Sources")[0]
    assert ("**Licence: non-commercial.** The source src is licensed CC BY-NC 4.0, which forbids commercial use "
            "(NC)") in nc and "no derivatives" not in nc
    for free in ("CC BY 4.0", "our own terms"):  # nothing forbidden, or nothing us4 can read: no line up top
        assert "**Licence" not in card_with(free).split("## Sources")[0]


def test_card_of_a_source_licensed_per_clip_counts_its_clips_terms(pocus_per_clip):
    rel = open_release(pocus_per_clip)
    assert len(rel.lock.clips) == 5  # Cov 00, 01; Pneu 00, 01; Reg 00 (Reg 01 is linear)
    first_screen = body((pocus_per_clip / "README.md").read_text()).split("## Sources")[0]
    assert ("**Licences vary per clip.** Source pocus states a licence per clip (its metadata sheet's License "
            "column; the `licence` column of the `videos` config holds each clip's). Of its 5 clips, 2 forbid "
            "commercial use (NC: CC BY-NC -SA 4.0, CC BY-NC-ND 4.0), 1 forbids derivatives (ND: CC BY-NC-ND 4.0) "
            "and 1 states terms us4 cannot read (COVID-19 emergency license): read them before use.") in first_screen
    assert "`us4 publish` refuses to upload them" in first_screen
