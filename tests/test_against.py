"""Issue 15, part 3: pretraining and evaluation releases are disjoint, and proven so.

`us4 audit RELEASE --against OTHER` finds frames of one release identical to, or near-duplicates
of, frames of another; `us4 benchmark` runs it between --pretrain and --eval and records it;
the semi-supervised term uses the pretraining release's own classes and the record names the
loss actually used; benchmark.json and the card give the evaluation folds' class counts.
"""
from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import av
import pytest
import yaml
from click.testing import CliRunner

from us4.builder import build_release
from us4.cli import main
from us4.contract.benchmark import read_benchmark
from us4.contract.benchmark_card import benchmark_markdown
from us4.phantom import write_phantom_clip
from us4.release.audit import audit_against
from us4.release.read import open_release
from us4.train.benchmark import disjointness_record, fold_class_counts, run_benchmark
from us4.train.checkpoint import load_weights
from us4.train.config import get_config
from us4.train.data import load_videoset
from us4.train.finetune import evaluated_videos
from us4.train.synthetic import synthetic_tables

from .conftest import POCUS_SAMPLE, pocus_sample_or_skip

BLUES_SAMPLE = POCUS_SAMPLE.parent / "blues"


def recipe(tmp: Path, name: str, classes: list[str], **source) -> Path:
    """A recipe declaring one video source `name`, labelled by file-name prefix."""
    spec = {"organ": "lung", "probe": "convex", "input": "video", "classes": classes, "label": {"prefix": True},
            "sampling": {"every_n": 5}, "crop": "auto", "text": "off", **source}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "version": "1.0.0", "description": name, "seed": 1,
                                    "sources": {name: spec}, "dedup": {"threshold": 0},
                                    "splits": {"kind": "holdout", "validation": 0.34}}))
    return path


def build(tmp: Path, name: str, classes: list[str], raw: Path, **source) -> Path:
    build_release(recipe(tmp, name, classes, **source), {name: raw}, tmp / name, workers=1, progress=False)
    return tmp / name


def reencode(src: Path, dst: Path, *, border: int = 0, black_first: bool = False) -> None:
    """Decode a clip, cut `border` pixels off each side, encode it again with another codec (MPEG-4 part 2:
    lossy, so every pixel differs a little from the H.264 original); `black_first`: its first frame all black,
    as many scanners' clips begin."""
    with av.open(str(src)) as inp:
        frames = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    h, w = frames[0].shape[0] - 2 * border, frames[0].shape[1] - 2 * border
    frames = [f[border:border + h, border:border + w] for f in frames]
    if black_first:
        frames[0] = frames[0] * 0
    with av.open(str(dst), mode="w") as out:
        stream = out.add_stream("mpeg4", rate=15)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.bit_rate = 4_000_000  # FFmpeg's default (200 kb/s) smears the scan's edges
        for arr in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")))
        out.mux(stream.encode())


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict[str, Path]:
    """A: five phantom clips, one beginning with a black frame. B: two other clips, a byte copy of A's Cov_a
    and A's Reg_b re-encoded and cropped. C: four other clips, one beginning with a black frame."""
    tmp = tmp_path_factory.mktemp("against")
    for i, name in enumerate(["Cov_a.mp4", "Cov_b.mp4", "Reg_a.mp4", "Reg_b.mp4", "reg_c.mp4"]):
        write_phantom_clip(tmp / "raw_a" / name, seed=i, n_frames=30, size=(128, 112))
    for i, name in enumerate(["Cov_x.mp4", "Reg_x.mp4"]):
        write_phantom_clip(tmp / "raw_b" / name, seed=20 + i, n_frames=30, size=(128, 112))
    shutil.copy(tmp / "raw_a" / "Cov_a.mp4", tmp / "raw_b" / "Cov_copy.mp4")
    reencode(tmp / "raw_a" / "Reg_b.mp4", tmp / "raw_b" / "Reg_recut.avi", border=1)
    for i, name in enumerate(["Cov_y.mp4", "Cov_z.mp4", "Reg_y.mp4", "reg_z.mp4"]):
        write_phantom_clip(tmp / "raw_c" / name, seed=40 + i, n_frames=30, size=(128, 112))
    for raw, name in (("raw_a", "reg_c.mp4"), ("raw_c", "reg_z.mp4")):  # lower case: no class prefix yet
        reencode(tmp / raw / name, tmp / raw / f"Reg_{name[4]}_black.avi", black_first=True)
        (tmp / raw / name).unlink()
    return {n: build(tmp, n, ["cov", "reg"], tmp / f"raw_{n.lower()}") for n in ("A", "B", "C")}


def test_audit_against_finds_a_copied_clip_and_a_reencoded_cropped_one(releases):
    """A byte copy of a clip gives identical frames; the same clip cut by 1 px on each side and re-encoded
    with another codec gives near-duplicates (the within-release measure, confirmed on pixels);
    nothing else pairs. The command lists each pair (video, frame, split of each side, distance,
    difference) and exits 1."""
    a, b = open_release(releases["A"]), open_release(releases["B"])
    result = audit_against(a, b, keep=1000)
    pairs = collections.Counter((p.a[0], p.b[0]) for p in result.pairs)
    assert set(pairs) == {("A/Cov_a.mp4", "B/Cov_copy.mp4"), ("A/Reg_b.mp4", "B/Reg_recut.avi")}, pairs
    frames_a = a.frames(["video_id", "frame_index"]).to_pylist()
    kept = sum(1 for r in frames_a if r["video_id"] == "A/Cov_a.mp4")
    copied = [p for p in result.pairs if p.b[0] == "B/Cov_copy.mp4"]
    # every kept frame of the copied clip meets its twin, identical (and maybe a close neighbour)
    assert {(p.a[1], p.b[1]) for p in copied if p.distance == 0 and p.difference == 0} == \
        {(r["frame_index"], r["frame_index"]) for r in frames_a if r["video_id"] == "A/Cov_a.mp4"}
    assert result.identical == kept and result.found == len(result.pairs)
    recut = [p for p in result.pairs if p.b[0] == "B/Reg_recut.avi"]
    assert recut and all(p.difference > 0 for p in recut) and all(p.difference <= 4.0 for p in recut)
    assert result.shared_videos == (2, 2)
    assert result.compared == result.frames[0] * result.frames[1] and result.candidates >= result.found

    out = CliRunner().invoke(main, ["audit", str(releases["A"]), "--against", str(releases["B"]), "--limit", "3"])
    assert out.exit_code == 1, out.output
    lines = out.output.splitlines()
    first = result.pairs[0]
    assert lines[0] == (f"  bits={first.distance:2d} diff={first.difference:5.2f}  {first.a[0]}#{first.a[1]} "
                        f"[{first.a[2]}]  ~  {first.b[0]}#{first.b[1]} [{first.b[2]}]")
    assert lines[3] == f"  ... and {result.found - 3} more (--limit)"
    assert (f"{result.found} near-duplicate frame pairs across the releases ({kept} identical): "
            f"{result.compared:,} frame pairs compared by hash") in out.output
    assert lines[-1] == ("2 videos of A share frames with 2 videos of B: training on one and evaluating on the "
                         "other is not leak-free")


def test_audit_against_disjoint_releases_finds_nothing_and_exits_0(releases):
    """Other clips share nothing; two black first frames are identical but share no image: counted apart
    (they made the two releases look leaked)."""
    out = CliRunner().invoke(main, ["audit", str(releases["A"]), "--against", str(releases["C"])])
    assert out.exit_code == 0, out.output
    a, c = (open_release(releases[n]) for n in "AC")
    n_a, n_c = (sum(s.rows for s in r.shards("frames")) for r in (a, c))
    last = out.output.splitlines()[-1]
    assert last.startswith(
        f"0 near-duplicate frame pairs across the releases (0 identical): {n_a * n_c:,} frame pairs compared by hash")
    assert last.endswith("; 1 pair with a blank frame (one grey level) not counted: no image shared")
    result = audit_against(a, c)
    assert (result.found, result.blank, result.pairs) == (0, 1, [])
    record = disjointness_record(a, c)  # what a benchmark pretraining on A, evaluated on C, records
    assert record.status == "disjoint" and record.blank_pairs_not_counted == 1
    assert record.statement == (f"pretraining corpus disjoint from the evaluation: {n_a * n_c:,} frame pairs "
                                   "compared by hash, 1 candidate pairs checked on pixels, 0 found, 1 with a blank "
                                   "frame not counted")
    refused = CliRunner().invoke(main, ["audit", str(releases["A"]), "--against", str(releases["C"]), "--text"])
    assert refused.exit_code == 2 and "--against compares two releases' frames" in refused.output


# --- the benchmark records the audit ------------------------------------------------------------------


def _class_counts_of(release: Path) -> dict[str, list[int]]:
    """Videos per class per fold, read from the release's videos table."""
    rows = open_release(release).videos(["label", "fold"]).to_pylist()
    c = collections.Counter((r["label"], r["fold"]) for r in rows)
    return {label: [c[(label, f)] for f in range(5)] for label in ("covid", "pneumonia", "regular")}


@pytest.fixture(scope="module")
def disjoint_run(phantom_release, phantom_pocus_release, tmp_path_factory):
    """`us4 benchmark` pretraining on the US-4 phantom, evaluating on the POCUS phantom, --label-fraction 0."""
    out = tmp_path_factory.mktemp("disjoint") / "b"
    result = CliRunner().invoke(main, ["benchmark", "--pretrain", str(phantom_release), "--eval",
                                       str(phantom_pocus_release), "--config", "tiny", "--out", str(out),
                                       "--device", "cpu", "--label-fraction", "0"])
    assert result.exit_code == 0, result.output
    return result, out


@pytest.mark.slow
def test_benchmark_records_a_disjoint_pretraining_corpus(disjoint_run, phantom_release, phantom_pocus_release):
    """The audit runs first and benchmark.json and the card say "pretraining corpus disjoint from the
    evaluation" with its figures; with --label-fraction 0 the loss is NT-Xent alone and is named so;
    per-fold class counts are those of the release."""
    result, out = disjoint_run
    record = json.loads((out / "benchmark.json").read_text())
    audit = record["pretraining"]["audit"]
    frames = [sum(s.rows for s in open_release(r).shards("frames")) for r in (phantom_release, phantom_pocus_release)]
    assert audit["status"] == "disjoint" and audit["pairs_found"] == 0 and audit["first_pairs"] == []
    assert audit["frame_pairs_compared"] == frames[0] * frames[1]
    assert audit["statement"] == (f"pretraining corpus disjoint from the evaluation: {frames[0] * frames[1]:,} frame "
                                  f"pairs compared by hash, {audit['candidate_pairs_checked']} candidate pairs checked "
                                  "on pixels, 0 found")
    assert result.stderr.splitlines()[0].startswith(audit["statement"])  # before decoding and training
    md = (out / "benchmark.md").read_text()
    assert "Pretraining corpus disjoint from the evaluation: " in md
    assert not any(r["leaked"] for r in record["results"].values())

    pre = record["pretraining"]
    assert pre["loss"] == "NT-Xent" and pre["labelled_videos"] == 0
    assert record["results"]["uscl"]["description"].endswith("mixup, NT-Xent)")
    assert "loss NT-Xent; " in md
    epochs = [x for x in result.stderr.splitlines() if x.startswith("pretrain uscl epoch")]
    assert epochs and all(": NT-Xent " in x and "CE" not in x for x in epochs)

    counts = record["evaluation"]["class_counts"]
    assert counts["videos"] == _class_counts_of(phantom_pocus_release)
    assert [sum(counts["frames"][c][f] for c in counts["frames"]) for f in range(5)] == \
        [f["test_frames"] for f in record["evaluation"]["folds"]]
    covid = zip(counts["videos"]["covid"], counts["frames"]["covid"], strict=True)
    assert "| covid | " + " | ".join(f"{v} ({n})" for v, n in covid) + " |" in md
    empty = [(f, c) for c, per in counts["videos"].items() for f, n in enumerate(per) if n == 0]
    assert [w.split(":")[0] for w in counts["warnings"]] == [f"evaluation fold {f} holds no {c} video" for f, c in empty]
    for warning in counts["warnings"]:
        assert f"**Warning:** {warning}." in md and f"warning: {warning}" in result.stderr


@pytest.mark.slow
def test_fold_class_counts_warn_where_a_fold_lacks_a_class(disjoint_run):
    """Thirteen videos of three classes dealt round-robin over 5 folds: fold 4 holds covid only, and each
    class it lacks is one warning, in the record and as a bold line of the card."""
    frames, videos = synthetic_tables(n_videos=13, frames_per_video=list(range(2, 15)), size=32)
    vs = load_videoset(frames, videos, 32)
    cfg = get_config("tiny")
    counts = fold_class_counts(vs, *evaluated_videos(vs, cfg), cfg)
    assert counts.videos == {"covid": [1, 1, 1, 1, 1], "pneumonia": [1, 1, 1, 1, 0], "regular": [1, 1, 1, 1, 0]}
    assert counts.frames == {"covid": [2, 5, 8, 11, 14], "pneumonia": [3, 6, 9, 12, 0],
                                "regular": [4, 7, 10, 13, 0]}
    assert [w.split(":")[0] for w in counts.warnings] == ["evaluation fold 4 holds no pneumonia video",
                                                            "evaluation fold 4 holds no regular video"]
    record = read_benchmark((disjoint_run[1] / "benchmark.json").read_bytes())  # the card is a function of the record
    md = benchmark_markdown(record.model_copy(update={
        "evaluation": record.evaluation.model_copy(update={"class_counts": counts})}))
    assert "| pneumonia | 1 (3) | 1 (6) | 1 (9) | 1 (12) | 0 (0) |" in md
    assert md.count("**Warning:** evaluation fold ") == 2
    assert "**Warning:** evaluation fold 4 holds no regular video: its accuracy says nothing of regular" in md


@pytest.mark.slow
def test_benchmark_pretraining_on_the_evaluation_release_still_says_so(phantom_pocus_release, tmp_path):
    """One release in both roles: no cross-release audit, the record says the test-fold frames are seen
    unlabelled; every label is withheld, so the loss is NT-Xent alone (it was printed "NT-Xent + CE")."""
    record = run_benchmark(phantom_pocus_release, phantom_pocus_release, "tiny", tmp_path / "b", device="cpu")
    record = json.loads(record.dump())
    pre = record["pretraining"]
    assert pre["audit"]["status"] == "same release"
    assert "test-fold frames are seen unlabelled in pretraining" in pre["audit"]["statement"]
    assert pre["videos_in_eval_release"] == pre["videos"]["train"] + pre["videos"]["validation"]
    assert pre["labelled_videos"] == 0 and pre["loss"] == "NT-Xent"
    assert all(h["supervised"] == 0 for v in pre["variants"].values() for h in v["history"])
    md = (tmp_path / "b" / "benchmark.md").read_text()
    assert "Pretraining on the evaluation release itself" in md and "loss NT-Xent; " in md


@pytest.mark.slow
def test_benchmark_flags_a_leak_and_trains_the_pretraining_releases_own_classes(phantom_pocus_raw,
                                                                              phantom_pocus_release, tmp_path):
    """A pretraining release declaring classes covid and negative, holding covid clips only, one of them a
    byte copy of an evaluation clip: the audit finds the shared frames, the record and the card say LEAKED
    and flag the pretrained figures (the benchmark still runs); the classifier has the release's two
    classes (it had one, max label id + 1, so its CE was always 0) and the CE term trains on the labelled
    clips (the copy's label is withheld, as that of any clip of the evaluation release)."""
    raw = tmp_path / "raw"
    for i in range(4):
        write_phantom_clip(raw / f"covid_{i}.mp4", seed=70 + i, n_frames=40, size=(128, 112))
    shutil.copy(phantom_pocus_raw / "pocus_videos" / "convex" / "Cov_phantom_00.mp4", raw / "covid_copy.mp4")
    pre_rel = build(tmp_path, "blueslike", ["covid", "negative"], raw)
    record = json.loads(run_benchmark(pre_rel, phantom_pocus_release, "tiny", tmp_path / "b", device="cpu").dump())
    audit, pre = record["pretraining"]["audit"], record["pretraining"]
    assert audit["status"] == "leaked" and audit["pairs_found"] > 0 and audit["identical_pairs"] > 0
    assert audit["videos_sharing_frames"] == {"pretrain": 1, "eval": 1}
    assert {p["pretrain"]["video_id"] for p in audit["first_pairs"]} == {"blueslike/covid_copy.mp4"}
    assert {p["eval"]["video_id"] for p in audit["first_pairs"]} == {"pocus/convex/Cov_phantom_00.mp4"}
    assert audit["statement"].startswith("LEAKED: the pretraining release shares frames with the evaluation release")
    assert {k: r["leaked"] for k, r in record["results"].items()} == {"uscl": True, "simclr_no_spg": True,
                                                                       "random": False}
    md = (tmp_path / "b" / "benchmark.md").read_text()
    assert f"**{audit['statement']}.**" in md.replace("\\", "")
    assert "| USCL (SPG + mixup) **(leaked)** |" in md and "| random initialisation |" in md

    assert pre["classifier_classes"] == ["covid", "negative"]
    assert pre["label_source"] == "label (the pretrain release's classes)"
    weights = load_weights(tmp_path / "b" / "uscl.safetensors")
    assert tuple(weights["fc.weight"].shape)[0] == 2
    assert pre["loss"] == "NT-Xent + 0.2 x semi-supervised CE" and pre["labelled_videos"] > 0
    assert any(h["supervised"] > 0 for h in pre["variants"]["uscl"]["history"])


# --- real data: the POCUS sample against a few COVID-BLUES clips ------------------------------------------


def blues_sample_or_skip() -> Path:
    videos = BLUES_SAMPLE / "lus_videos"
    if not videos.is_dir():
        pytest.skip(f"real COVID-BLUES files not present: put the authors' published folder (lus_videos/, "
                    f"clinical_variables.csv) at {BLUES_SAMPLE} to run this real-data test")
    return BLUES_SAMPLE


def blues_clips(out: Path, patients: dict[str, str], blues: Path) -> Path:
    """Copies of the named patients' clips, each named CLASS_<file> so the test recipe labels it by prefix."""
    for patient, label in patients.items():
        for clip in sorted((blues / "lus_videos").glob(f"patient_{patient}_*.mp4"))[:2]:
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(clip, out / f"{label}_{clip.name}")
    return out


@pytest.mark.slow
def test_real_pocus_and_blues_are_disjoint_and_a_copied_clip_is_found(pocus_release, tmp_path):
    """Eight BLUES clips (two PCR-positive, two negative patients) against the POCUS sample: nothing shared,
    exit 0; the same BLUES clips plus one POCUS convex clip: that clip's frames are found, exit 1; a tiny
    benchmark pretrained on the BLUES clips records the corpora as disjoint and trains covid/negative."""
    blues = blues_sample_or_skip()
    pocus = pocus_sample_or_skip()
    cov = collections.defaultdict(list)
    for row in (blues / "clinical_variables.csv").read_text().splitlines()[1:]:
        patient, test = row.split(",")[:2]
        cov[test].append(patient)
    patients = {p: "covid" for p in cov["1"][:2]} | {p: "negative" for p in cov["0"][:2]}
    raw = blues_clips(tmp_path / "raw", patients, blues)
    clean = build(tmp_path, "blues_sample", ["covid", "negative"], raw)
    ok = CliRunner().invoke(main, ["audit", str(clean), "--against", str(pocus_release)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines()[-1].startswith("0 near-duplicate frame pairs across the releases (0 identical)")

    pocus_clip = sorted((pocus / "pocus_videos" / "convex").glob("Cov*.mp4"))[0]
    shutil.copy(pocus_clip, raw / f"covid_{pocus_clip.name}")
    leaky = build(tmp_path, "blues_leaky", ["covid", "negative"], raw)
    found = audit_against(open_release(leaky), open_release(pocus_release), keep=10_000)
    assert found.found > 0 and found.shared_videos[0] == 1
    assert {p.a[0] for p in found.pairs} == {f"blues_leaky/covid_{pocus_clip.name}"}
    assert {p.b[0] for p in found.pairs} == {f"pocus/convex/{pocus_clip.name}"}
    bad = CliRunner().invoke(main, ["audit", str(leaky), "--against", str(pocus_release)])
    assert bad.exit_code == 1 and "1 video of blues_leaky shares frames with 1 video of pocus" in bad.output

    record = json.loads(run_benchmark(clean, pocus_release, "tiny", tmp_path / "b", device="cpu").dump())
    pre = record["pretraining"]
    assert pre["audit"]["status"] == "disjoint" and pre["audit"]["statement"].startswith(
        "pretraining corpus disjoint from the evaluation")
    assert pre["classifier_classes"] == ["covid", "negative"] and pre["labelled_videos"] > 0
    assert pre["loss"] == "NT-Xent + 0.2 x semi-supervised CE"
    assert record["evaluation"]["class_counts"]["videos"] == _class_counts_of(pocus_release)
