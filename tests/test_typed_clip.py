"""A clip's parameters and facts are typed models: the cache key hashes the parameters as it
always did; the build cache validates facts when it writes and reads them, rebuilds an entry
of another layout, names a damaged one, and lets a failing disk stop the build with its line."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

import us4.builder.cache as cache_module
from us4.builder import build_release
from us4.builder.cache import ClipCache, ClipFacts
from us4.builder.environment import byte_libraries
from us4.builder.ingest import STAGES, ingest_clip
from us4.builder.plan import INGEST_VERSION, ClipParams, checks_text, make_plan
from us4.cli import main
from us4.contract.lock import Stage
from us4.hashing import sha256_json
from us4.recipe import DEFAULT_MAX_FRAME_PIXELS, load_recipe

from .test_build import clips, digest, tiny_recipe, write_broken_files

GOOD = ["Regphantom_0.mp4", "Covphantom_1.mp4", "Regphantom_2.mp4"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(recipe, raw folder, release) of three good clips and a broken one: the failure keeps the
    build's cache beside the release (read-only: copy it with `copy_of`)."""
    tmp = tmp_path_factory.mktemp("typed")
    raw = clips(tmp / "raw", GOOD)
    shutil.copy(write_broken_files(tmp / "broken")["not_video"], raw / "Cov_broken.mp4")
    recipe = tiny_recipe(tmp)
    summary = build_release(recipe, {"butterfly": raw}, tmp / "rel", workers=1, progress=False)
    assert summary.videos == 3 and len(summary.failures) == 1
    return recipe, raw, tmp / "rel"


def copy_of(release: Path, dest: Path) -> Path:
    shutil.copytree(release, dest, symlinks=True)
    return dest


def entries(out: Path) -> list[Path]:
    """The index files of a build's cache, one per finished clip."""
    return sorted(p for p in (out / ".us4-work" / "clips").glob("*.arrow") if not p.name.endswith(".pixels.arrow"))


def rewrite_facts(index: Path, facts: bytes) -> None:
    """The cache index at `index` with other facts (the table of frames as it was)."""
    table = ipc.open_file(pa.OSFile(str(index))).read_all()
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema.with_metadata({b"us4": facts})) as writer:
        writer.write_table(table)
    index.write_bytes(sink.getvalue().to_pybytes())


def stored_facts(index: Path) -> dict:
    return json.loads(ipc.open_file(pa.OSFile(str(index))).schema.metadata[b"us4"])


# --- a clip's parameters --------------------------------------------------------------------


def test_clip_params_are_a_frozen_model_and_the_cache_key_hashes_what_it_always_did(tmp_path):
    raw = clips(tmp_path / "raw", GOOD[:2])
    boxed = {"butterfly": {"sampling": {"every_n": 4, "max_frames": 6},
                           "crop": {"mode": "auto", "clips": {GOOD[1]: [2, 4, 60, 50]}}}}
    # the parameters as the recipe's dict of them spelled them, which every cache made so far is keyed by;
    # a recipe that does not group near-duplicates makes no thumbnails, and says so in its keys
    old = {"input": "video", "fps": None, "sampling": {"every_n": 4, "max_frames": 6}, "regions": "largest",
           "max_frame_pixels": DEFAULT_MAX_FRAME_PIXELS, "text": "warn", "dedup": 1.0, "png_compress_level": 1,
           "view": None}
    crops = {f"butterfly/{GOOD[0]}": {"mode": "auto"}, f"butterfly/{GOOD[1]}": {"mode": "box", "box": [2, 4, 60, 50]}}
    holdout = {"kind": "holdout", "validation": 0.5}
    for splits, form in (({**holdout, "group": "near_duplicates"}, old), (holdout, {**old, "thumbnails": False})):
        recipe = load_recipe(tiny_recipe(tmp_path, sources=boxed, splits=splits))
        plan = make_plan(recipe, {"butterfly": raw})
        assert len(plan.jobs) == 2
        for job in plan.jobs:
            assert isinstance(job.params, ClipParams)
            assert job.params.sampling.indices(16, 30.0) == [0, 4, 8, 12]
            assert job.key == sha256_json({"sha256": job.sha256, "params": {**form, "crop": crops[job.video_id]},
                                           "ingest": INGEST_VERSION,
                                           "libraries": byte_libraries(text=checks_text(recipe))})
    params = plan.jobs[0].params
    with pytest.raises(ValidationError):
        params.dedup = 0.0  # frozen: the key of a job can never disagree with its parameters
    with pytest.raises(ValidationError, match="speed"):
        ClipParams.model_validate({**params.model_dump(mode="json"), "fps": 30.0, "speed": 2})
    with pytest.raises(ValidationError, match="box exactly when"):
        ClipParams.model_validate({**params.model_dump(mode="json"), "crop": {"mode": "auto", "box": [0, 0, 1, 1]}})


# --- a clip's facts ---------------------------------------------------------------------------


def test_ingest_is_a_list_of_stages_and_its_facts_a_model_checked_when_the_cache_writes(tmp_path):
    assert [stage for stage, _ in STAGES] == [Stage.PROBE, Stage.SAMPLE, Stage.DECODE, Stage.CROP, Stage.TEXT]
    raw = clips(tmp_path / "raw", GOOD[:1])
    job, = make_plan(load_recipe(tiny_recipe(tmp_path)), {"butterfly": raw}).jobs
    cache = ClipCache(tmp_path / "work")
    assert ingest_clip(job, cache, tmp_path / "local") == 4  # frames 0, 4, 8, 12 of 16
    table, facts = cache.read_index(job.key)
    assert isinstance(facts, ClipFacts) and table.num_rows == facts.rows == 4
    assert facts.info.n_frames == 16 and facts.info.codec and facts.text.action == "none"
    assert facts.png_bytes == sum(len(b) for b in cache.read_pixels(job.key, "png").to_pylist())
    # facts that would not read back are refused before anything is written
    bad = facts.model_copy(update={"rows": -1})
    with pytest.raises(ValidationError, match="rows"):
        cache.write_result("0" * 64, table, bad)
    assert not list((tmp_path / "work" / "clips").glob("0000*"))


def test_a_cache_entry_of_an_older_layout_is_ingested_again_and_the_release_is_byte_identical(built, tmp_path):
    """The facts us4 wrote before views_left_out and region_problems (a332ef1, same cache key):
    they were read by key and stopped the build with a KeyError."""
    recipe, raw, release = built
    out = copy_of(release, tmp_path / "rel")
    before = digest(out)
    index = entries(out)[1]
    old = {k: v for k, v in stored_facts(index).items() if k not in ("views_left_out", "region_problems")}
    rewrite_facts(index, json.dumps(old, sort_keys=True).encode())
    summary = build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False)
    assert (summary.ingested, summary.reused, summary.videos) == (1, 3, 3)
    assert digest(out) == before
    assert {"views_left_out", "region_problems"} <= set(stored_facts(index))  # rewritten in today's layout


@pytest.mark.parametrize("damage", ["facts", "file"])
def test_a_damaged_cache_entry_is_one_line_naming_it_and_nothing_is_lost(built, tmp_path, damage):
    """Damage is a clear error, not a quiet rebuild: cache files are written atomically, so
    damage is a failing disk's or someone's doing, and the user must hear of it. Deleting the
    file, as the line says, rebuilds that clip alone."""
    recipe, raw, release = built
    out = copy_of(release, tmp_path / "rel")
    before = digest(out)
    index = entries(out)[0]
    if damage == "facts":
        rewrite_facts(index, json.dumps(stored_facts(index)).encode()[:-20])
        cause = "its clip facts are not JSON"
    else:
        index.write_bytes(index.read_bytes()[:40])
        cause = "Arrow"
    result = CliRunner().invoke(main, ["build", str(recipe), "--raw", f"butterfly={raw}", "--out", str(out), "-q"])
    assert result.exit_code == 1, result.output
    line, = [line for line in result.output.splitlines() if line.startswith("us4: error:")]
    assert line.startswith(f"us4: error: {index}: damaged build cache (") and cause in line
    assert line.endswith("delete it and build again")
    assert digest(out) == before and len(entries(out)) == 3
    index.unlink()
    summary = build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False)
    assert (summary.ingested, summary.reused) == (1, 3)
    assert digest(out) == before


@pytest.mark.parametrize("where", ["index", "pixels"])
def test_a_failing_disk_reading_the_cache_stops_the_build_with_its_line_and_loses_nothing(
        built, tmp_path, monkeypatch, where):
    """EIO reading a clip's index (checking what is done) or its pixels (writing a shard) is ours: the disk's own line, not "damaged build cache; delete it"."""
    recipe, raw, release = built
    out = copy_of(release, tmp_path / "rel")
    before = digest(out)
    failing = entries(out)[2] if where == "index" else entries(out)[2].with_suffix(".pixels.arrow")
    opened = cache_module._source

    def failing_disk(path: Path, memory_map: bool) -> pa.NativeFile:
        if path == failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))  # as Arrow raises it: naming no file
        return opened(path, memory_map)

    monkeypatch.setattr(cache_module, "_source", failing_disk)
    result = CliRunner().invoke(main, ["build", str(recipe), "--raw", f"butterfly={raw}", "--out", str(out), "-q",
                                       "--workers", "1"])  # the shards too, in this process
    assert result.exit_code == 1, result.output
    assert (f"us4: error: {failing}: input/output error (EIO): the disk failed to read or write: check it, "
            "then run the same command again to resume") in result.output.splitlines()
    assert digest(out) == before and len(entries(out)) == 3
    monkeypatch.undo()
    summary = build_release(recipe, {"butterfly": raw}, out, workers=1, progress=False)
    assert (summary.ingested, summary.reused) == (0, 4)
    assert digest(out) == before
