"""The PyTorch path (`us4.torch`) over real built releases, in DataLoader workers and from a Hub
revision served by olah on 127.0.0.1; DDP without deprecated arguments; `us4 build --version` and
the local suffix of a build named like a shipped release."""
from __future__ import annotations

import hashlib
import pickle
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader

import us4.torch as ut
from us4.builder.plan import PHANTOM_MARKER
from us4.cli import main
from us4.errors import ReleaseError, VerificationError
from us4.hub.mirror import serve_mirror
from us4.hub.publish import publish_git
from us4.phantom.corpus import make_pocus_corpus
from us4.release.read import open_release
from us4.train.data import FRAME_COLUMNS, load_videoset

from .conftest import flip_byte

REPO = Path(__file__).resolve().parents[1]


def _frames_table_bytes(release: Path) -> int:
    rel = open_release(release)
    return sum(s.bytes for s in rel.shards("frames"))


def test_frames_match_the_trainers_input_and_the_videos_table(phantom_pocus_release):
    rel = open_release(phantom_pocus_release)
    ds = ut.frames_dataset(phantom_pocus_release, size=48)
    assert len(ds) == rel.lock.counts.frames
    # the trainer's path (the whole frames table decoded in memory) gives the same pixels
    vs = load_videoset(rel.frames(FRAME_COLUMNS), rel.videos(), 48, threads=1)
    videos = rel.videos(["video_id", "label_id", "frame_ids"]).to_pylist()
    by_id = {v["video_id"]: v for v in videos}
    row_of = {}  # frame_id -> row of vs.images
    for v, members in enumerate(vs.members):
        row_of.update(zip(by_id[vs.video_ids[v]]["frame_ids"], members.tolist()))
    for item in range(0, len(ds), 7):
        got = ds[item]
        assert got["image"].dtype == torch.float32 and tuple(got["image"].shape) == (1, 48, 48)
        assert 0.0 <= float(got["image"].min()) and float(got["image"].max()) <= 1.0
        want = vs.images[row_of[got["frame_id"]]]
        assert torch.equal((got["image"] * 255).round().to(torch.uint8), want)
        assert got["label"] == by_id[got["video_id"]]["label_id"]
        assert got["frame_id"] in by_id[got["video_id"]]["frame_ids"]


def test_a_dataloader_with_two_workers_yields_every_frame_once(phantom_pocus_release):
    ds = ut.frames_dataset(phantom_pocus_release, size=32)
    assert len(pickle.dumps(ds)) < 16_000  # what each worker receives: paths and integers, no image
    assert len(pickle.dumps(ds)) * 50 < _frames_table_bytes(phantom_pocus_release)
    seen, labels = [], []
    for batch in DataLoader(ds, batch_size=16, num_workers=2, shuffle=True,
                            generator=torch.Generator().manual_seed(0)):
        assert batch["image"].shape[1:] == (1, 32, 32) and batch["label"].dtype == torch.int64
        seen += batch["frame_id"].tolist()
        labels += batch["label"].tolist()
    lock = open_release(phantom_pocus_release).lock
    assert sorted(seen) == sorted(c.frame_id + k for c in lock.clips for k in range(len(c.frame_index)))
    assert set(labels) == {0, 1, 2}  # POCUS' three classes, as class indices


def test_split_and_sources_keep_those_clips_and_unknown_ones_are_one_line(phantom_pocus_release):
    lock = open_release(phantom_pocus_release).lock
    ds = ut.frames_dataset(phantom_pocus_release, size=16, split="fold0")
    assert len(ds) == sum(len(c.frame_index) for c in lock.clips if c.split == "fold0") > 0
    assert {ds[i]["video_id"] for i in range(len(ds))} == {c.video_id for c in lock.clips if c.split == "fold0"}
    with pytest.raises(ReleaseError, match="no split fold9 in .*its splits: fold0, fold1"):
        ut.frames_dataset(phantom_pocus_release, split="fold9")
    with pytest.raises(ReleaseError, match="no source clust"):
        ut.frames_dataset(phantom_pocus_release, sources=["clust"])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_a_changed_shard_is_refused_before_any_item(phantom_pocus_release, tmp_path):
    copy = tmp_path / "rel"
    shutil.copytree(phantom_pocus_release, copy)
    shard = open_release(copy).shards("frames")[0].path
    flip_byte(copy / shard)
    with pytest.raises(VerificationError, match=f"{shard}: sha256 .* differs from lock"):
        ut.frames_dataset(copy)


def test_videos_dataset_gives_each_clip_its_frames_in_order(phantom_pocus_release):
    lock = open_release(phantom_pocus_release).lock
    frames = ut.frames_dataset(phantom_pocus_release, size=24)
    clips = ut.videos_dataset(phantom_pocus_release, size=24)
    assert len(clips) == len(lock.clips) and list(clips.labels) == list(frames.labels)
    item = 0
    for k, clip in enumerate(lock.clips):
        got = clips[k]
        n = len(clip.frame_index)
        assert got["video_id"] == clip.video_id and got["frame_ids"].tolist() == list(range(clip.frame_id, clip.frame_id + n))
        assert got["images"].shape == (n, 1, 24, 24)
        assert torch.equal(got["images"][-1], frames[item + n - 1]["image"])
        assert (frames.clip_of_frame[item:item + n] == k).all()
        item += n
    short = ut.videos_dataset(phantom_pocus_release, size=24, max_frames=3)[0]
    n = len(lock.clips[0].frame_index)
    assert short["frame_ids"].tolist() == [lock.clips[0].frame_id + k for k in np.linspace(0, n - 1, 3).round().astype(int)]


def test_memory_stays_at_a_row_group_while_reading_a_release(pocus_release):
    """Arrow's peak allocation while reading every frame of the POCUS sample (verification apart:
    us4.load shares it) is a few times its largest row group's images, not the release's frames
    (67 MB: the trainer's path holds them all at once)."""
    code = ("import sys, pyarrow as pa, us4.torch as ut\n"
            "from us4.release.read import open_release\n"
            "from us4.train.data import release_index\n"
            "ds = ut.FramesDataset(release_index(open_release(sys.argv[1])), 32)\n"
            "for i in range(len(ds)): ds[i]\n"
            "print(pa.default_memory_pool().max_memory())\n")
    peak = int(subprocess.run([sys.executable, "-c", code, str(pocus_release)], capture_output=True, text=True,
                              check=True).stdout.split()[-1])
    files = [pq.ParquetFile(pocus_release / s.path) for s in open_release(pocus_release).shards("frames")]
    biggest = max(f.metadata.row_group(k).column(0).total_compressed_size for f in files for k in range(f.num_row_groups))
    total = _frames_table_bytes(pocus_release)
    assert peak < 6 * biggest and peak * 3 < total, (peak, biggest, total)


def test_a_hub_revision_served_by_olah_is_downloaded_verified_and_read(phantom_pocus_release, tmp_path, monkeypatch):
    monkeypatch.setenv("US4_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "mirror"
    published = publish_git(open_release(phantom_pocus_release), root, "org/pocus-phantom", quiet=True)
    local = ut.frames_dataset(phantom_pocus_release, size=32, split="fold1")
    with serve_mirror(root) as endpoint:
        remote = ut.frames_dataset("org/pocus-phantom", size=32, split="fold1", revision=published.tag,
                                   endpoint=endpoint, sources=["pocus"])
    assert str(tmp_path / "cache") in remote.index.shards[0]
    assert len(remote) == len(local) > 0
    for i in (0, len(local) // 2, len(local) - 1):
        a, b = local[i], remote[i]
        assert (a["video_id"], a["frame_id"], a["label"]) == (b["video_id"], b["frame_id"], b["label"])
        assert torch.equal(a["image"], b["image"])


def _ddp_warnings_rank(frames, videos) -> None:
    from dataclasses import replace

    from us4.train.config import get_config
    from us4.train.distributed import joined
    from us4.train.pretrain import pretrain

    vs = load_videoset(frames, videos, 32, threads=1)
    train_v, val_v = np.flatnonzero(vs.folds != 0), np.flatnonzero(vs.folds == 0)
    cfg = get_config("tiny")
    # one process group for both runs: joining twice on one port can hang in gloo's rendezvous
    with warnings.catch_warnings(record=True) as caught, joined(torch.device("cpu")) as (world, _dev):
        warnings.simplefilter("always")
        for sync in (True, False):  # both ways DDP is built
            cfg = replace(cfg, pretrain=replace(cfg.pretrain, epochs=1, steps_per_epoch=1, sync_batchnorm=sync))
            pretrain(vs, train_v, val_v, vs.label_ids.copy(), 3, cfg, world=world, spg=True,
                     device=torch.device("cpu"), seed=4)
    future = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert not future, future


@pytest.mark.slow
def test_data_parallel_pretraining_gives_no_future_warning():
    from us4.train.synthetic import synthetic_tables

    from .test_ddp import run_ranks

    frames, videos = synthetic_tables(n_videos=12, frames_per_video=3, size=32, seed=2)
    run_ranks(_ddp_warnings_rank, frames, videos)


# --- the release's version ---------------------------------------------------------------------

def _unmarked_pocus(root: Path) -> Path:
    """Phantom clips laid out as POCUS' data/, without the marker that names a build phantom: to
    the build, other clips of the real data set."""
    data = make_pocus_corpus(root, clips_per_class=2, n_frames=8)
    (data / PHANTOM_MARKER).unlink()
    return data


def test_a_build_named_like_a_shipped_release_with_other_clips_says_so_and_is_versioned_apart(tmp_path):
    raw, out = _unmarked_pocus(tmp_path / "raw"), tmp_path / "rel"
    build = ["build", "pocus", "--raw", f"pocus={raw}", "--out", str(out), "-q"]
    result = CliRunner().invoke(main, build)
    assert result.exit_code == 0, result.output
    lock = open_release(out).lock
    assert not lock.phantom and lock.name == "pocus"
    clips = "".join(f"{c.source}\t{c.video_id}\t{c.sha256}\n" for c in sorted(lock.clips, key=lambda c: (c.source, c.video_id, c.sha256)))
    want = f"1.2.0-local.{hashlib.sha256(clips.encode()).hexdigest()[:8]}"
    assert lock.version == want and lock.recipe.version == "1.2.0"  # the recipe as it is written
    assert (f"its clips differ from the release us4 ships as pocus 1.2.0 ({len(lock.clips)} added, 61 removed of 61): "
            f"versioned {want}, not 1.2.0") in result.output.splitlines()[-1]

    # --version sets the version; one no shipped release has is kept as given
    result = CliRunner().invoke(main, build + ["--version", "2.0.0rc1"])
    assert result.exit_code == 0, result.output
    assert open_release(out).lock.version == "2.0.0rc1" and "differ" not in result.output
    result = CliRunner().invoke(main, build + ["--version", "1.1.0"])  # named like pocus-1.1.0: apart again
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"1\.1\.0-local\.[0-9a-f]{8}", open_release(out).lock.version)
    assert "ships as pocus 1.1.0" in result.output
    result = CliRunner().invoke(main, build + ["--version", "../1"])
    assert result.exit_code == 1 and "--version '../1'" in result.output.splitlines()[-1]
    assert open_release(out).lock.version.startswith("1.1.0-local.")  # nothing built is lost


def test_the_pocus_sample_rebuilt_keeps_the_shipped_version(pocus_release):
    assert open_release(pocus_release).lock.version == "1.2.0"  # the clips of pocus-1.2.0 exactly


# --- the recipe of docs/recipes.md -------------------------------------------------------------

def _docs_recipe() -> tuple[str, str]:
    """(the YAML of the declared-source example, the text that explains it)."""
    text = (REPO / "docs" / "recipes.md").read_text().split("## A source declared in the recipe", 1)[1]
    _, block, rest = text.split("```", 2)
    return block.removeprefix("yaml\n"), rest.split("\n## ", 1)[0]


def test_the_declared_source_of_the_docs_builds_and_every_key_is_explained(tmp_path):
    import yaml

    from us4.phantom import write_phantom_clip

    recipe_text, explained = _docs_recipe()
    recipe = yaml.safe_load(recipe_text)
    # each key in backquotes, as `key`, `key: value` or `part.key`
    keys = [k for k in recipe] + [f"{part}.{k}" for part in ("dedup", "splits", "output") for k in recipe[part]] \
        + list(recipe["sources"]["thyroid"])
    unexplained = [k for k in keys if not any(f"`{form}{end}" in explained for form in (k, k.split(".")[-1])
                                              for end in ("`", ":", "."))]
    assert not unexplained
    (tmp_path / "thyroid.yaml").write_text(recipe_text)
    raw = tmp_path / "raw"
    rows = ["file,diagnosis"]
    for i, label in enumerate(["benign", "malignant", "benign", "malignant"]):
        write_phantom_clip(raw / "clips" / f"nodule_{i}.mp4", seed=40 + i, n_frames=12, text=None)
        rows.append(f"nodule_{i},{label}")
    (raw / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out" / "thyroid"
    result = CliRunner().invoke(main, ["build", str(tmp_path / "thyroid.yaml"), "--raw", f"thyroid={raw}",
                                       "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    lock = open_release(out).lock
    assert (lock.name, lock.version, lock.counts.videos) == ("thyroid-clinic", "0.1.0", 4)
    assert {c.split for c in lock.clips} == {"train", "validation"} and {c.licence for c in lock.clips} == {"CC BY-NC 4.0"}
    assert not any("nodule" in c.video_id for c in lock.clips)  # ids: hash
    ds = ut.videos_dataset(out, size=16)
    assert sorted(ds.labels.tolist()) == [0, 0, 1, 1]  # the declared classes' order: benign 0, malignant 1
    assert {c.video_id: c.label for c in lock.clips} == {ds[k]["video_id"]: ["benign", "malignant"][ds[k]["label"]]
                                                        for k in range(len(ds))}
    assert len(ds[0]["frame_ids"]) == 8  # sampling: evenly 8 of 12 frames


def test_the_readmes_set_transform_gives_the_frames_datasets_tensors(phantom_pocus_release, tmp_path, monkeypatch):
    """Stock `datasets` users resize as the README shows: the same tensors as us4.torch's."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets_cache"))
    text = (REPO / "README.md").read_text().split("With stock `datasets`", 1)[1]
    code = "\n".join(line[4:] for line in text.split("\n\n", 2)[1].splitlines())
    code = code.replace('"releases/pocus"', repr(str(phantom_pocus_release))).replace("num_workers=2", "num_workers=0")
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the README's own lines
    batch = next(iter(scope["loader"]))
    ours = ut.frames_dataset(phantom_pocus_release, size=224, split="fold0")
    assert batch["image"].shape == (min(64, len(ours)), 1, 224, 224)
    for k in (0, 5):
        assert torch.equal(batch["image"][k], ours[k]["image"]) and int(batch["label_id"][k]) == ours[k]["label"]


def test_the_trainer_reads_a_release_through_the_same_reader_with_the_same_pixels(pocus_release):
    """The benchmark's VideoSet of a release, its PNGs read a row group at a time, is the one the
    whole frames table gave (same videos, members and pixels), with less memory held."""
    from us4.train.data import load_release_videoset

    rel = open_release(pocus_release)
    lazy = load_release_videoset(rel, 32, threads=2)
    whole = load_videoset(rel.frames(FRAME_COLUMNS), rel.videos(), 32, threads=2)
    assert lazy.video_ids == whole.video_ids and torch.equal(lazy.images, whole.images)
    assert all(np.array_equal(a, b) for a, b in zip(lazy.members, whole.members))
    assert np.array_equal(lazy.label_ids, whole.label_ids) and lazy.splits == whole.splits
