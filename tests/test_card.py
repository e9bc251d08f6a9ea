"""The generated card: deterministic, read by the Hub's tools, its facts from the lock and the
registry; the contact sheet and other attachments; the benchmark section."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from us4.contract.card import BENCHMARK, CONTACT_SHEET, render_card
from us4.contract.lock import Failure, Stage, dump_lock
from us4.contract.schema import SCHEMAS
from us4.errors import ReleaseError
from us4.registry import CITATIONS, SOURCES
from us4.release.attach import add_attachment
from us4.release.contact_sheet import write_contact_sheet
from us4.release.read import Release, open_release
from us4.release.verify import verify_release


def header(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def copy_release(src: Path, dst: Path) -> Release:
    shutil.copytree(src, dst)
    return open_release(dst)


def card_of(rel: Release) -> str:
    return render_card(rel.lock, lambda name: rel.path(name).read_bytes())


# the card rendered in a fresh interpreter: another process, another string hash seed
RENDER = """
import sys
from us4.contract.card import render_card
from us4.release.read import open_release
rel = open_release(sys.argv[1])
sys.stdout.buffer.write(render_card(rel.lock, lambda name: rel.path(name).read_bytes()).encode())
"""


def test_card_is_deterministic_and_is_what_the_build_wrote(phantom_pocus_release):
    rel = open_release(phantom_pocus_release)
    card = card_of(rel)
    elsewhere = subprocess.run([sys.executable, "-c", RENDER, str(phantom_pocus_release)], capture_output=True,
                               check=True, env={**os.environ, "PYTHONHASHSEED": "0"}).stdout.decode()
    assert card == elsewhere
    assert (phantom_pocus_release / "README.md").read_text() == card
    assert str(phantom_pocus_release) not in card  # no absolute paths
    # the lock records the card's hash, and verify checks that hash (it never renders a card)
    assert rel.lock.generated["README.md"].sha256 == hashlib.sha256(card.encode()).hexdigest()


def test_card_header_is_read_by_the_hub_tools(phantom_pocus_release, tmp_path, caplog):
    import datasets
    from huggingface_hub import DatasetCard

    rel = open_release(phantom_pocus_release)
    card = card_of(rel)
    meta = DatasetCard(card).data.to_dict()
    assert [c["config_name"] for c in meta["configs"]] == ["frames", "videos"]
    assert meta["configs"][0]["default"] is True
    for config, info in zip(("frames", "videos"), meta["dataset_info"], strict=True):
        assert info["config_name"] == config
        assert [f["name"] for f in info["features"]] == SCHEMAS[config].names
        rows: dict[str, int] = {}
        for shard in rel.shards(config):
            rows[shard.split] = rows.get(shard.split, 0) + shard.rows
        assert {s["name"]: s["num_examples"] for s in info["splits"]} == rows
    image = next(f for f in meta["dataset_info"][0]["features"] if f["name"] == "image")
    assert image == {"name": "image", "dtype": "image"}

    # datasets reads the card whole (a malformed part is dropped with a warning) and decodes images
    caplog.set_level(logging.WARNING)
    datasets.logging.enable_propagation()
    try:
        ds = datasets.load_dataset(str(phantom_pocus_release), "frames", cache_dir=str(tmp_path / "cache"))
    finally:
        datasets.logging.disable_propagation()
    assert "dataset_info" not in caplog.text
    frames_rows = {s: sum(x.rows for x in rel.shards("frames") if x.split == s)
                   for s in {x.split for x in rel.shards("frames")}}
    assert {k: len(v) for k, v in ds.items()} == frames_rows
    first = ds[sorted(ds)[0]]
    assert isinstance(first.features["image"], datasets.Image)
    assert isinstance(first[0]["image"], Image.Image)


def test_card_facts_come_from_the_lock_and_the_registry(phantom_release):
    rel = open_release(phantom_release)
    card = card_of(rel)
    sources = sorted(rel.lock.recipe.sources)
    by_source: dict[str, list[int]] = {s: [0, 0] for s in sources}
    for labels in rel.lock.counts.by_split_label.values():
        for key, n in labels.items():
            by_source[key.split("/")[0]][0] += n.videos
            by_source[key.split("/")[0]][1] += n.frames
    for name in sources:
        src = SOURCES[name]
        videos, frames = by_source[name]
        # licence text is the registry's, with `|` escaped for the table cell
        assert f"| {name} | {src.corpus} | {src.organ} |" in card
        assert f"| {videos} | {frames} | {src.licence.replace('|', chr(92) + '|')} |" in card
        assert f"| {src.input} |" in card  # the raw form each source was read from
        assert f"**{name}**: {src.licence}" in card
    for key in ("uscl", "clust"):  # the method, and the public source's own citation
        assert CITATIONS[key].bibtex in card
    assert CITATIONS["pocus"].bibtex not in card  # no POCUS clip and no benchmark here
    counts = rel.lock.counts
    assert "| **all** |" in card and f"| {counts.frames} ({counts.videos}) |" in card
    assert "frames spread evenly over the clip" in card  # the us4 recipe's `evenly` policy
    assert rel.lock.recipe_sha256 in card
    # a phantom release says so in its title and its opening lines
    assert card.splitlines()[card.splitlines().index("---", 1) + 2].startswith("# us4-phantom 1.0.0-phantom (PHANTOM")
    assert "This release is a phantom" in card
    assert "## Failure ledger" in card
    assert "## Sample frames" in card and "assets/contact_sheet.png" in card  # the build attaches it


def test_failure_ledger_summary_groups_by_source_and_stage(phantom_pocus_release):
    rel = open_release(phantom_pocus_release)
    failures = [Failure(source="pocus", video_id=v, sha256=None, stage=stage, reason=reason) for v, stage, reason in (
        ("pocus/convex/Cov_a.mp4", Stage.DECODE, "truncated | end"), ("pocus/convex/Cov_b.mp4", Stage.DECODE, "truncated"),
        ("pocus/convex/Reg_c.gif", Stage.PROBE, "no video stream"))]
    card = card_of(Release(rel.root, rel.lock.model_copy(update={"failures": failures})))
    assert "3 clips failed" in card
    assert "| pocus | decode | 2 | pocus/convex/Cov_a.mp4: truncated \\| end |" in card
    assert "| pocus | probe | 1 | pocus/convex/Reg_c.gif: no video stream |" in card
    excluded = len(rel.lock.excluded)
    assert f"{excluded} file{'' if excluded == 1 else 's'} left out by the recipe" in card


def test_contact_sheet_is_attached_shown_and_verified(phantom_release, tmp_path):
    rel = copy_release(phantom_release, tmp_path / "rel")
    path = write_contact_sheet(rel)
    first = path.read_bytes()
    assert write_contact_sheet(rel).read_bytes() == first  # deterministic
    with Image.open(path) as im:
        n_sources = len(rel.lock.recipe.sources)
        assert im.height % n_sources == 0 and im.width > im.height
    rel = add_attachment(rel, path)
    assert rel.lock.attachments == {CONTACT_SHEET: hashlib.sha256(first).hexdigest()}
    assert (rel.root / "release.json").read_bytes() == dump_lock(rel.lock)
    card = (rel.root / "README.md").read_text()
    assert f"![Sample frames per source]({CONTACT_SHEET})" in card
    assert card == card_of(open_release(rel.root))
    assert verify_release(open_release(rel.root)).ok
    path.write_bytes(first[:-10])
    assert any(p.startswith(CONTACT_SHEET) for p in verify_release(open_release(rel.root)).problems)


def test_attachment_names_the_release_owns_are_refused(phantom_pocus_release, tmp_path):
    rel = copy_release(phantom_pocus_release, tmp_path / "rel")
    (tmp_path / "x.json").write_text("{}")
    for name in ("README.md", "release.json", "croissant.json", "data/frames/x.parquet", "../x.json", ".hidden",
                 "/etc/x.json", "a/../../x.json"):
        with pytest.raises(ReleaseError):
            add_attachment(rel, tmp_path / "x.json", name)
    with pytest.raises(ReleaseError, match="no such file"):
        add_attachment(rel, tmp_path / "missing.json")
    assert verify_release(open_release(rel.root)).ok and sorted(open_release(rel.root).lock.attachments) == [
        "assets/contact_sheet.png"]


def test_benchmark_section_renders_the_attached_record(phantom_release, tmp_path, monkeypatch):
    from us4.contract import card as card_module

    seen: list = []

    def fake_markdown(record) -> str:  # the section's own content is tested with the trainer
        seen.append(record)
        return "## Benchmark\n\nrecord of " + record.format + "\n"

    monkeypatch.setattr(card_module, "benchmark_markdown", fake_markdown)
    rel = copy_release(phantom_release, tmp_path / "rel")
    data = rel.lock.data_sha256()
    record = (Path(__file__).parent / "fixtures" / "benchmark-0.2.0.json").read_text()  # a record of us4 0.2.0
    (tmp_path / BENCHMARK).write_text(record)
    rel = add_attachment(rel, tmp_path / BENCHMARK)
    card = (rel.root / "README.md").read_text()
    assert seen[-1].model_dump(mode="json", exclude_unset=True) == json.loads(record)
    assert "## Benchmark\n\nrecord of us4-benchmark/1\n\nBenchmark results are evidence" in card
    assert CITATIONS["pocus"].bibtex in card  # the benchmark evaluates on POCUS
    assert verify_release(open_release(rel.root)).ok
    assert rel.lock.data_sha256() == data  # evidence, not data: the release's data is unchanged
