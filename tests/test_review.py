"""`us4 review RELEASE` (issue 18, part 1): the curator's view, one local HTML page beside the
release. Tested in a real browser (headless Chromium driven by playwright): it loads with no
console error and no network request, holds a card per clip and none per failure, its filters
and search hide and find what they should; a patient's name planted in a file name of a
hashed source stays out of the release, shows in the private page as written, and runs nothing."""
from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from us4.cli import main
from us4.hub.publish import publish_plan
from us4.phantom import write_phantom_clip
from us4.contract.layout import local_dir
from us4.release.read import open_release
from us4.release.review import ORIGINAL_PX

from .test_trust_identity import every_byte

PLANTED = "DOE^JOHN<img src=x onerror=window.pwned=1><script>window.pwned=2"  # a name in a file name: data
TEXT = "SAINT NOWHERE INFIRMARY"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def noise_clip(path: Path, seed: int, n: int = 8, size: tuple[int, int] = (96, 80), black_first: bool = False) -> None:
    """A clip with no scan region to find (noise over the whole frame): its crop falls back to
    the full frame. `black_first`: it begins with a black frame, as many clips do."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for k in range(n):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels * (k > 0 or not black_first), "rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """Two sources: `ward` hashes its ids (a patient's name in a file name, text burned into that
    clip and masked, two clips sharing frames: one group); `scans` names clips by path (a clip
    whose crop falls back to the full frame, one cropped to its detected sector, one not a video)."""
    pytest.importorskip("rapidocr", reason="the ward's burned-in text is found by the detector (us4[text])")
    tmp = tmp_path_factory.mktemp("review")
    ward, scans = tmp / "raw" / "ward", tmp / "raw" / "scans"
    ward.mkdir(parents=True)
    scans.mkdir(parents=True)
    write_phantom_clip(ward / f"pneu_{PLANTED}.mp4", seed=1, n_frames=8, text=TEXT)
    write_phantom_clip(ward / "pneu_clean.mp4", seed=2, n_frames=8, text=None)
    write_phantom_clip(ward / "reg_a.mp4", seed=3, n_frames=8, text=None)  # the same first frame: a group
    write_phantom_clip(ward / "reg_b.mp4", seed=3, n_frames=8, text=None, fps=10)
    noise_clip(scans / "reg_noise.avi", seed=4)
    sector = write_phantom_clip(scans / "pneu_sector.mp4", seed=5, n_frames=8, size=(320, 240))
    (scans / "reg_broken.mp4").write_text("not a video\n" * 20)
    common = {"organ": "lung", "probe": "convex", "input": "video", "classes": ["pneu", "reg"],
              "label": {"prefix": True}, "sampling": {"evenly": 3}}
    recipe = tmp / "curate.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "curate", "version": "0.1.0", "seed": 1, "dedup": {"threshold": 0},
        "splits": {"kind": "holdout", "validation": 0.5, "group": "near_duplicates"},
        "sources": {"ward": {**common, "ids": "hash", "crop": "none", "text": "mask"},
                    "scans": {**common, "ids": "path", "crop": "auto", "text": "off"}}}))
    out = tmp / "rel"
    result = CliRunner().invoke(main, ["build", str(recipe), "--raw", f"ward={ward}", "--raw", f"scans={scans}",
                                       "--out", str(out), "--workers", "1", "--quiet"])
    assert result.exit_code == 3 and "1 clip failed" in result.output, result.output  # 3: built, with failures
    return {"out": out, "ward": ward, "scans": scans, "sector": sector, "tmp": tmp}


def review(out: Path, *raw: str) -> tuple[Path, str]:
    result = CliRunner().invoke(main, ["review", str(out), *[a for r in raw for a in ("--raw", r)]])
    assert result.exit_code == 0, result.output
    return Path(result.output.splitlines()[-1]), result.output


def test_the_page_lies_beside_the_release_never_in_it_and_nothing_publishes_or_verifies_it(built):
    out = built["out"]
    page, output = review(out, f"ward={built['ward']}", f"scans={built['scans']}")
    lock = open_release(out).lock
    assert page == local_dir(out.absolute()) / "review" / "index.html" and page.is_file()
    assert not page.resolve().is_relative_to(out.resolve())
    assert f"review: {len(lock.clips)} clip cards ({len(lock.clips)} with original frames), 1 failure" in output
    assert (page.parent.parent.stat().st_mode & 0o777) == 0o700  # owner-only, like the id map beside it
    assert all("review" not in p for p in publish_plan(open_release(out), "org/curate").paths)
    verify = CliRunner().invoke(main, ["verify", str(out)])
    assert verify.exit_code == 0, verify.output


def test_a_planted_name_stays_out_of_the_release_and_is_escaped_in_the_page(built):
    out = built["out"]
    page, _ = review(out, f"ward={built['ward']}", f"scans={built['scans']}")
    assert "doe^john" not in every_byte(out)  # a hashed source publishes no file name
    html = page.read_text()
    assert "DOE^JOHN&lt;img src=x onerror=window.pwned=1&gt;&lt;script&gt;window.pwned=2" in html  # private: shown
    assert "<img src=x" not in html and "<script>window" not in html


def test_originals_come_from_the_raw_clips_with_the_crop_drawn_else_the_card_says_so(built):
    out, sector = built["out"], built["sector"]
    release = open_release(out)
    index = next(n for n, c in enumerate(release.lock.clips) if c.video_id == "scans/pneu_sector.mp4")
    crop = release.videos(["video_id", "crop_box"]).to_pandas().set_index("video_id").loc["scans/pneu_sector.mp4",
                                                                                       "crop_box"].tolist()
    assert crop[2] < 320 and crop[3] < 240, "the phantom's sector is detected, narrower than the frame"
    page, _ = review(out, f"scans={built['scans']}")  # the ward's raw folder not given
    with Image.open(page.parent / "img" / f"c{index}-o0.jpg") as im:
        first = np.asarray(im.convert("RGB")).astype(int)
    scale = min(1.0, ORIGINAL_PX / 320)
    assert first.shape[:2] == (round(240 * scale), round(320 * scale)), "the original frame, not the stored crop"
    x, y = round(crop[0] * scale), round((crop[1] + crop[3] // 2) * scale)  # the crop box's left edge, drawn green
    r, g, b = first[y, x]
    assert g > 150 and r < 100 and b < 130, (crop, sector, first[y, x - 2: x + 3].tolist())
    html = page.read_text()
    ward = sum(1 for c in release.lock.clips if c.source == "ward")
    assert html.count("original frames not shown: run us4 review with --raw ward=DIR") == ward
    bad = CliRunner().invoke(main, ["review", str(out), "--raw", f"nosuch={built['scans']}"])
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines()[-1].startswith(f"us4: error: --raw nosuch={built['scans']}: release "
                                                          "curate 0.1.0 has no source 'nosuch'")


def test_the_page_in_chromium_loads_offline_filters_searches_and_runs_no_planted_script(built):
    if CHROMIUM is None:
        pytest.skip("no Chromium: apt-get install -y chromium (Debian's package), then pip install -e '.[test]' "
                    "for playwright (never `playwright install`: the test uses the system's Chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' (playwright) and "
                                                                 "apt-get install -y chromium")
    out = built["out"]
    page, _ = review(out, f"ward={built['ward']}", f"scans={built['scans']}")
    lock = open_release(out).lock
    fallback = {w.video_id for w in lock.warnings if w.kind == "crop_fallback"}
    texted = {c.video_id for c in lock.clips if c.text == "masked"}
    assert fallback == {"scans/reg_noise.avi"} and len(texted) == 1 and len(lock.failures) == 1
    planted = next(c.video_id for c in lock.clips if c.video_id in texted)
    grouped = {c.video_id for c in lock.clips if c.group}
    assert len(grouped) == 2
    errors: list[str] = []
    shot = built["tmp"] / "review.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
               else None)
        tab.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        tab.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else errors.append(f"request {r.url}"))
        tab.on("requestfailed", lambda r: errors.append(f"failed {r.url}"))
        tab.on("dialog", lambda d: errors.append(f"dialog {d.message}"))
        tab.goto(page.resolve().as_uri())
        tab.wait_for_load_state("load")

        def shown() -> set[str]:
            return set(tab.eval_on_selector_all("[data-video-id]:not([hidden])", "els => els.map(e => e.dataset.videoId)"))

        assert tab.locator("[data-video-id]").count() == len(lock.clips)
        assert shown() == {c.video_id for c in lock.clips}
        assert tab.locator("tr[data-failed]").count() == 1  # the ledger's row: no card
        tab.select_option("#f-flag", "fallback")
        assert shown() == fallback
        assert not tab.locator("tr[data-failed]").is_visible()
        tab.select_option("#f-flag", "text")
        assert shown() == texted
        tab.select_option("#f-flag", "grouped")
        assert shown() == grouped
        tab.select_option("#f-flag", "failed")
        assert shown() == set() and tab.locator("tr[data-failed]").is_visible()
        tab.select_option("#f-flag", "")
        tab.select_option("#f-source", "scans")
        assert shown() == {c.video_id for c in lock.clips if c.source == "scans"}
        tab.select_option("#f-source", "")
        tab.select_option("#f-split", "validation")
        assert shown() == {c.video_id for c in lock.clips if c.split == "validation"} != set()
        tab.select_option("#f-split", "")
        tab.fill("#f-search", planted[-8:].upper())
        assert shown() == {planted}
        assert tab.inner_text("#f-count").startswith(f"1 of {len(lock.clips)} clips shown")
        card = tab.locator(f"[data-video-id='{planted}']")
        assert f"pneu_{PLANTED}.mp4" in card.inner_text()  # the name as written, as text
        assert card.locator("img[src=x], script").count() == 0
        assert tab.evaluate("typeof window.pwned") == "undefined"
        assert tab.evaluate("[...document.images].filter(i => i.complete).every(i => i.naturalWidth > 0)")
        tab.screenshot(path=str(shot))
        browser.close()
    assert errors == []
    with Image.open(io.BytesIO(shot.read_bytes())) as im:
        assert im.size == (1400, 1000)


def test_pairs_across_splits_that_share_only_a_blank_frame_are_counted_apart_not_drawn(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for n, name in enumerate(["reg_x.avi", "reg_y.avi", "pneu_x.avi", "pneu_y.avi"]):
        noise_clip(raw / name, seed=10 + n, black_first=name.startswith("reg"))
    recipe = tmp_path / "blank.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "blank", "version": "0.1.0", "seed": 1, "dedup": {"threshold": 0},
        "splits": {"kind": "holdout", "validation": 0.5},
        "sources": {"scans": {"organ": "lung", "probe": "convex", "input": "video", "classes": ["pneu", "reg"],
                              "label": {"prefix": True}, "sampling": {"evenly": 3}, "crop": "none", "text": "off"}}}))
    out = tmp_path / "rel"
    result = CliRunner().invoke(main, ["build", str(recipe), "--raw", f"scans={raw}", "--out", str(out),
                                       "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    splits = {c.video_id: c.split for c in open_release(out).lock.clips}
    assert splits["scans/reg_x.avi"] != splits["scans/reg_y.avi"], splits
    page, output = review(out)
    assert "1 near-duplicate pair across splits" in output  # the two black first frames
    html = page.read_text()
    assert "1 pair (of the closest 1) with a blank frame (one grey level" in html
    assert 'class="pair"' not in html and not list((page.parent / "img").glob("f*.jpg"))


def test_a_stopped_review_keeps_the_earlier_page_leaves_no_staging_and_a_killed_ones_is_cleared(built, monkeypatch):
    """SIGTERM mid-review: exit 143 at once (the cards not yet begun are dropped, not drawn first), no
    staging folder, the earlier page kept. A staging folder a kill -9 left is removed by the next review."""
    import os
    import signal

    import us4.release.review as review_module

    out = built["out"]
    page, _ = review(out)
    before = page.read_bytes()
    local = page.parent.parent
    draw, calls = review_module._originals, []

    def stopped(card, *args):
        calls.append(card)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the signal lands while this card is drawn
        return draw(card, *args)

    monkeypatch.setattr(review_module, "_originals", stopped)
    result = CliRunner().invoke(main, ["review", str(out), "--workers", "1"])
    assert result.exit_code == 143, result.output
    assert "us4: interrupted; no page was written (an earlier one is kept)" in result.stderr
    assert len(calls) < len(open_release(out).lock.clips)
    assert sorted(p.name for p in local.iterdir() if p.name.startswith(".review")) == []
    assert page.read_bytes() == before
    monkeypatch.undo()

    (local / ".review.k9x2").mkdir()
    (local / ".review.k9x2" / "index.html").write_text("half")
    review(out)
    assert sorted(p.name for p in local.iterdir() if p.name.startswith(".review")) == []
