"""Licence terms are data (issue 15, the licence item): terms read from a licence's text; the card's
first screen says when a source forbids derivatives (ND) or commercial use (NC), or is licensed per
clip; `us4 publish` refuses frames of an ND source (unless --force), says NC, and publishes the lock,
recipe and card alone (--lock-only) into a local git mirror that olah serves: a download of it is
refused with one line, a diff and a rebuild verified against it work, and a later publish with the
data files never moves the version's tag nor main backwards."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import us4
from us4.builder import build_release
from us4.cli import main
from us4.contract.card import render_card
from us4.errors import HubError
from us4.hub.download import download_release, staging_dir
from us4.hub.mirror import free_port, serve_mirror
from us4.hub.publish import publish_git, publish_hub
from us4.phantom import write_phantom_clip
from us4.phantom.corpus import make_pocus_corpus
from us4.recipe import parse_recipe
from us4.registry import licence_terms
from us4.release.attach import add_attachment
from us4.release.read import open_release

ND_LICENCE = "CC BY-NC-ND 4.0"
LOCK_ONLY_FILES = ["README.md", "recipe.yaml", "release.json"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.relative_to(root).parts[0].startswith(".")}


def publish(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["publish", *args, "-q"])
    return result.exit_code, result.output


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
        recipe = rel.lock.recipe.to_dict()
        recipe["sources"]["src"]["licence"] = licence
        return body(render_card(rel.lock.model_copy(update={"recipe": parse_recipe(recipe)}),
                                lambda p: rel.path(p).read_bytes()))

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
            "column; the lock and the `licence` column of the `videos` config hold each clip's). Of its 5 clips, 2 forbid "
            "commercial use (NC: CC BY-NC -SA 4.0, CC BY-NC-ND 4.0), 1 forbids derivatives (ND: CC BY-NC-ND 4.0) "
            "and 1 states terms us4 cannot read (COVID-19 emergency license): read them before use.") in first_screen
    assert "`us4 publish` refuses to upload them" in first_screen


# --- publish: refused, forced, non-commercial --------------------------------------------


def test_publish_refuses_frames_of_an_nd_source_with_one_line(nd_release, pocus_per_clip, tmp_path):
    mirror = tmp_path / "mirror"
    code, output = publish(str(nd_release), "--git", str(mirror), "--repo", "org/nd")
    assert code == 1
    assert output.strip().splitlines() == [
        f"us4: error: {nd_release}: not published: source src's licence 'CC BY-NC-ND 4.0' forbids derivatives (ND), "
        "and every frame of the release is derived from a clip; publish the lock, recipe and card alone (the same "
        "command with --lock-only), from which others rebuild it from the raw files, or pass --force if you hold "
        "the licensor's permission to share derived frames"]
    assert not mirror.exists()  # refused before anything was created
    # a dry run says the same; the Hub path refuses before it reaches any server (a closed port here)
    assert publish(str(nd_release), "--repo", "org/nd", "--dry-run")[0] == 1
    with pytest.raises(HubError, match=r"not published: source src's licence 'CC BY-NC-ND 4.0' forbids"):
        publish_hub(open_release(nd_release), "org/nd", endpoint=f"http://127.0.0.1:{free_port()}", quiet=True)
    # licensed per clip: the clips under ND are named by their licence and count
    with pytest.raises(HubError, match=r"not published: the licence 'CC BY-NC-ND 4\.0' of 1 clip of source pocus "
                                       r"forbids derivatives \(ND\)"):
        publish_git(open_release(pocus_per_clip), mirror, "org/pocus-phantom", quiet=True)
    assert not mirror.exists()


def test_forced_and_non_commercial_publishes_say_what_the_licences_say(raw, nd_release, pocus_per_clip, tmp_path):
    mirror = tmp_path / "mirror"
    code, output = publish(str(nd_release), "--git", str(mirror), "--repo", "org/nd", "--force")
    assert code == 0, output
    assert output.splitlines()[:2] == [
        "note: source src's licence 'CC BY-NC-ND 4.0' forbids derivatives (ND): its frames are published under "
        "--force, on the licensor's permission",
        "note: source src's licence 'CC BY-NC-ND 4.0' forbids commercial use (NC): shared for non-commercial use "
        "only, as the card says"]
    repo = mirror / "datasets" / "org" / "nd"
    assert sorted(git(repo, "ls-tree", "-r", "--name-only", "v1.0.0").split()) == sorted(
        open_release(nd_release).lock.files())

    nc = build(raw, tmp_path / "nc", "CC BY-NC 4.0", name="nc")
    code, output = publish(str(nc), "--git", str(mirror), "--repo", "org/nc")
    assert code == 0, output  # sharing for research is allowed: not refused, but said
    assert output.splitlines()[0] == ("note: source src's licence 'CC BY-NC 4.0' forbids commercial use (NC): shared "
                                      "for non-commercial use only, as the card says")
    assert output.splitlines()[1].startswith("published: org/nc v1.0.0 = commit")

    code, output = publish(str(pocus_per_clip), "--git", str(mirror), "--repo", "org/pocus-phantom", "--force")
    assert code == 0, output
    assert output.splitlines()[:4] == [
        "note: the licence 'CC BY-NC-ND 4.0' of 1 clip of source pocus forbids derivatives (ND): its frames are "
        "published under --force, on the licensor's permission",
        "note: the licence 'CC BY-NC -SA 4.0' of 1 clip of source pocus forbids commercial use (NC): shared for "
        "non-commercial use only, as the card says",
        "note: the licence 'CC BY-NC-ND 4.0' of 1 clip of source pocus forbids commercial use (NC): shared for "
        "non-commercial use only, as the card says",
        "note: the licence 'COVID-19 emergency license' of 1 clip of source pocus states terms us4 cannot read: "
        "check that it allows sharing frames derived from its clips"]


# --- lock only ----------------------------------------------------------------------------


@pytest.mark.slow
def test_lock_only_is_served_refused_by_download_diffed_and_rebuilt(raw, nd_release, tmp_path, monkeypatch):
    monkeypatch.setenv("US4_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    mirror, repo_id = tmp_path / "mirror", "org/nd"
    repo = mirror / "datasets" / "org" / "nd"
    code, output = publish(str(nd_release), "--git", str(mirror), "--repo", repo_id, "--lock-only")
    assert code == 0, output
    assert output.startswith("published (the lock, recipe and card alone: no data file): org/nd v1.0.0 = commit")
    alone = git(repo, "rev-parse", "v1.0.0^{commit}")
    assert git(repo, "ls-tree", "-r", "--name-only", "v1.0.0").split() == LOCK_ONLY_FILES
    assert git(repo, "show", "v1.0.0:release.json") == (nd_release / "release.json").read_text().strip()
    card = git(repo, "show", "v1.0.0:README.md")
    header = yaml.safe_load(card.split("---\n")[1])
    assert "configs" not in header and "dataset_info" not in header  # no data files for the Hub to look for
    assert "**The data files are not in this repository.**" in card and "us4.load(" not in card
    assert ("us4 fetch src --out raw/src\nus4 build recipe.yaml --raw src=raw/src --out nd\n"
            "us4 verify nd --manifest org/nd@v1.0.0") in card
    assert "**Licence: no derivatives.**" in card
    assert publish(str(nd_release), "--git", str(mirror), "--repo", repo_id, "--lock-only")[1].startswith(
        "already published (same content) (the lock, recipe and card alone: no data file)")

    out = tmp_path / "download"
    with serve_mirror(mirror) as endpoint:
        # the Hub path reads what the tag holds over HTTP: the same lock-only commit, nothing to send
        same = publish_hub(open_release(nd_release), repo_id, endpoint=endpoint, lock_only=True, quiet=True)
        assert (same.created, same.commit, same.alone) == (False, alone, True)

        result = CliRunner().invoke(main, ["download", repo_id, "--revision", "v1.0.0", "--out", str(out),
                                           "--endpoint", endpoint, "-q"])
        assert result.exit_code == 1
        assert result.output.strip().splitlines() == [
            f"us4: error: org/nd@v1.0.0 at {endpoint}: holds the lock, recipe and card of nd 1.0.0 alone, not its "
            "data files (us4 publish --lock-only); rebuild the release from its sources' raw files: us4 fetch src "
            "--out raw/src; us4 build recipe.yaml --raw src=raw/src --out nd; us4 verify nd --manifest "
            "org/nd@v1.0.0 (recipe.yaml is in the repository beside the lock)"]
        assert not out.exists() and not staging_dir(out).exists()
        with pytest.raises(HubError, match="holds the lock, recipe and card of nd 1.0.0 alone"):
            us4.load(repo_id, revision="v1.0.0", endpoint=endpoint)

        result = CliRunner().invoke(main, ["diff", f"{repo_id}@v1.0.0", str(nd_release), "--endpoint", endpoint])
        assert result.exit_code == 0 and "no differences in clips, frames, labels, splits or recipe" in result.output

        # whoever holds the raw files rebuilds from the repository's recipe and gets the lock's bytes
        from huggingface_hub import hf_hub_download

        recipe = hf_hub_download(repo_id, "recipe.yaml", repo_type="dataset", revision="v1.0.0", endpoint=endpoint,
                                 local_dir=tmp_path / "got")
        rebuilt = tmp_path / "nd"
        assert CliRunner().invoke(main, ["build", recipe, "--raw", f"src={raw}", "--out", str(rebuilt),
                                         "--quiet"]).exit_code == 0
        result = CliRunner().invoke(main, ["verify", str(rebuilt), "--manifest", f"{repo_id}@v1.0.0",
                                           "--endpoint", endpoint])
        assert result.exit_code == 0 and "verdict: reproduced: byte-identical" in result.output, result.output

    # later, with the licensor's permission: the data files, tagged v1.0.0+data.1; v1.0.0 stays the lock alone
    code, output = publish(str(nd_release), "--git", str(mirror), "--repo", repo_id, "--force")
    assert code == 0 and "published (the data files of v1.0.0, whose tag holds its lock alone): org/nd " \
                         "v1.0.0+data.1" in output, output
    assert git(repo, "rev-parse", "v1.0.0^{commit}") == alone
    assert git(repo, "rev-parse", "main") == git(repo, "rev-parse", "v1.0.0+data.1^{commit}")
    assert git(repo, "rev-parse", "main^") == alone
    assert publish(str(nd_release), "--git", str(mirror), "--repo", repo_id, "--force")[1].splitlines()[-1].startswith(
        "already published (same content) (the data files of v1.0.0")
    with serve_mirror(mirror) as endpoint:
        got = download_release(repo_id, "v1.0.0+data.1", tmp_path / "data", endpoint=endpoint, quiet=True)
        assert digest(got.path) == digest(nd_release)
        with pytest.raises(HubError, match=r"alone, not its data files \(us4 publish --lock-only\); tag "
                                           r"v1\.0\.0\+data\.1 of the repository holds them; rebuild"):
            download_release(repo_id, "v1.0.0", tmp_path / "again", endpoint=endpoint, quiet=True)

    # a new lock-only commit of a version whose data files are out would take them off main: refused
    changed = shutil.copytree(nd_release, tmp_path / "with_notes")
    (tmp_path / "notes.json").write_text("{}")
    add_attachment(open_release(changed), tmp_path / "notes.json", "extra/notes.json")
    code, output = publish(str(changed), "--git", str(mirror), "--repo", repo_id, "--lock-only")
    assert code == 1 and output.strip() == (
        "us4: error: org/nd: nd 1.0.0 is already published with its data files (tag v1.0.0+data.1); a commit of "
        "its lock alone would take them off main: publish it without --lock-only")
    assert git(repo, "rev-parse", "main") == git(repo, "rev-parse", "v1.0.0+data.1^{commit}")


def test_rebuild_names_the_shipped_recipe_that_states_the_lock_s_recipe(nd_release):
    from us4.contract.licences import rebuild_commands
    from us4.recipe import load_recipe

    lock = open_release(nd_release).lock
    shipped = load_recipe("pocus")
    assert rebuild_commands(lock.model_copy(update={"recipe": shipped}), "org/p@v1.1.0") == [
        "us4 fetch pocus --out raw/pocus", "us4 build pocus --raw pocus=raw/pocus --out nd",
        "us4 verify nd --manifest org/p@v1.1.0"]
    reseeded = dataclasses.replace(shipped, seed=shipped.seed + 1)  # any other recipe: the one written out beside the lock
    assert rebuild_commands(lock.model_copy(update={"recipe": reseeded}), "org/p@v1.1.0")[1] == \
        "us4 build recipe.yaml --raw pocus=raw/pocus --out nd"


@pytest.mark.slow
def test_lock_only_keeps_main_moving_forward_and_takes_evidence(raw, nd_release, tmp_path):
    """Placement as for full releases: an older version published late, lock-only or with its data,
    stays beside main, reached by its tag; evidence about a lock-only version is a lock-only commit."""
    mirror, repo_id = tmp_path / "mirror", "org/nd"
    repo = mirror / "datasets" / "org" / "nd"
    newer = build(raw, tmp_path / "nd2", ND_LICENCE, version="2.0.0")
    assert publish(str(newer), "--git", str(mirror), "--repo", repo_id, "--lock-only")[0] == 0
    head = git(repo, "rev-parse", "main")
    code, output = publish(str(nd_release), "--git", str(mirror), "--repo", repo_id, "--lock-only")
    assert code == 0 and "main still serves 2.0.0" in output, output
    assert git(repo, "rev-parse", "main") == head
    assert git(repo, "ls-tree", "-r", "--name-only", "v1.0.0").split() == LOCK_ONLY_FILES
    code, output = publish(str(nd_release), "--git", str(mirror), "--repo", repo_id, "--force")
    assert code == 0 and "v1.0.0+data.1" in output and "main still serves 2.0.0" in output, output
    assert git(repo, "rev-parse", "main") == head
    assert git(repo, "rev-parse", "v1.0.0+data.1^") == git(repo, "rev-parse", "v1.0.0^{commit}")

    # evidence about a version published lock-only, to a repository of its own
    other = tmp_path / "other"
    assert publish(str(nd_release), "--git", str(other), "--repo", repo_id, "--lock-only")[0] == 0
    changed = shutil.copytree(nd_release, tmp_path / "with_notes")
    (tmp_path / "notes.json").write_text("{}")
    add_attachment(open_release(changed), tmp_path / "notes.json", "extra/notes.json")
    code, output = publish(str(changed), "--git", str(other), "--repo", repo_id, "--lock-only")
    assert code == 0 and "(evidence: data unchanged) (the lock, recipe and card alone: no data file): org/nd " \
                         "v1.0.0+evidence.1" in output, output
    repo = other / "datasets" / "org" / "nd"
    assert git(repo, "ls-tree", "-r", "--name-only", "v1.0.0+evidence.1").split() == LOCK_ONLY_FILES
    assert git(repo, "rev-parse", "main") == git(repo, "rev-parse", "v1.0.0+evidence.1^{commit}")
