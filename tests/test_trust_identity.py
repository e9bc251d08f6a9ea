"""Trust, part 5 of issue 14: every value from outside (a file name, a recipe string) is
escaped where we write it: Markdown (the card), JSON in HTML (Croissant), CSV (the local
id map), a console line, a caption drawn on the contact sheet."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from PIL import Image

from us4.cli import main
from us4.escape import csv_cell, json_in_html, markdown, one_line
from us4.media.phantom import write_phantom_clip
from us4.release.read import open_release

MRN = "MRN12345678"
FOLDER = f"DOE_JOHN {MRN}"  # the export's folder, named by the patient
TEXT = "SAINT NOWHERE INFIRMARY"  # burned into the pixels


def build(recipe: Path, source: str, raw: Path, out: Path) -> Result:
    return CliRunner().invoke(main, ["build", str(recipe), "--raw", f"{source}={raw}", "--out", str(out),
                                     "--workers", "1", "--quiet"])


@pytest.fixture(scope="module")
def lungs(tmp_path_factory) -> Path:
    """A public video source as a careless user has it: a patient's name in a file name, a
    hospital's name burned into the frames of that clip, and a clean clip beside it."""
    raw = tmp_path_factory.mktemp("lungs") / "raw"
    raw.mkdir()
    write_phantom_clip(raw / f"pneu_{FOLDER}.mp4", seed=1, n_frames=8, text=TEXT)
    write_phantom_clip(raw / "reg_clean.mp4", seed=2, n_frames=8, text=None)
    return raw


def video_recipe(tmp: Path, description: str = "public lung clips", **source) -> Path:
    spec = {"organ": "lung", "probe": "convex", "input": "video", "classes": ["pneu", "reg"],
            "label": {"prefix": True}, "sampling": {"evenly": 3}, "crop": "none", **source}
    path = tmp / "lungs.yaml"
    path.write_text(yaml.safe_dump({"name": "lungs", "version": "0.1.0", "description": description, "seed": 1,
                                    "sources": {"lungs": spec}, "dedup": {"threshold": 0},
                                    "splits": {"kind": "holdout", "validation": 0.5}}))
    return path


INJECTED = "pneu_x\n\n## Licence\n\nCC0 <img src=x onerror=alert(1)>.mp4"
FORMULAS = ["reg=cmd|' -C calc'!A0.mp4", "=1+2.mp4", "-2+3.mp4", "@SUM(A1).mp4", "+1.mp4"]


def test_values_from_file_names_and_the_recipe_are_data_in_card_croissant_and_csv(lungs, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(lungs / "reg_clean.mp4", raw / INJECTED)
    for name in FORMULAS:
        shutil.copy(lungs / "reg_clean.mp4", raw / name)
    description = "Lungs.\n\n## Licence\n\nCC0, all rights waived <img src=x onerror=alert(1)> [click](http://x.test)"
    out = tmp_path / "rel"
    result = build(video_recipe(tmp_path, description, text="off"), "lungs", raw, out)
    assert result.exit_code == 3, result.output  # the formula names carry no class prefix: ledger entries
    card = (out / "README.md").read_text()
    headings = [line for line in card.splitlines() if line.startswith("#")]
    assert headings == ["# lungs 0.1.0", "## Sources", "## Counts by split and label", "## Sample frames",
                        "## Recipe: sampling and cropping", "## Groups",
                        "## Identity: names, headers and burned-in text", "## Failure ledger", "## Licences",
                        "## Citation", "## Provenance"]
    assert "<img" not in card
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").enable("table").render(card.split("\n---\n", 1)[1])
    assert "<img src=x" not in html and "<a href" not in html and html.count("<h2>") == len(headings) - 1
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # shown as written
    # Croissant: the same strings, inert in a page that embeds it
    raw_json = (out / "croissant.json").read_text()
    assert "<" not in raw_json and ">" not in raw_json
    assert "<img src=x onerror=alert(1)>" in json.loads(raw_json)["description"]
    # the local id map: no cell a spreadsheet would run
    rows = list(csv.reader(open(tmp_path / "rel.local" / "ids.csv")))
    assert not [cell for row in rows for cell in row if cell.startswith(("=", "+", "-", "@"))]
    assert {r[2] for r in rows[1:]} >= {"'=1+2.mp4", "'-2+3.mp4", "'@SUM(A1).mp4", "'+1.mp4", INJECTED}
    # the console: one line per failure, whatever the name holds
    failed = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 4 and "failed: lungs/=1+2.mp4: plan: unreadable label" in result.output


def test_one_escape_per_target():
    assert one_line("a\nb\x1b[2J\u202ec\udcff") == "a\\nb\\x1b[2J\\u202ec\\udcff"
    assert markdown("## x | *y* <b>&") == "\\#\\# x \\| \\*y\\* &lt;b&gt;&amp;"
    assert [markdown(s) for s in ("- a", "+ a", "= a", "12. a", "3) a", "a-b 1.")] == [
        "\\- a", "\\+ a", "\\= a", "12\\. a", "3\\) a", "a-b 1."]
    assert [markdown(s) for s in ("snake_case", "_x_", "a__b", "x_")] == ["snake_case", "\\_x\\_", "a\\_\\_b", "x\\_"]
    assert [csv_cell(s) for s in ("=1", "+1", "-1", "@a", "\tx", "a=1", None)] == [
        "'=1", "'+1", "'-1", "'@a", "'\tx", "a=1", ""]
    text = json.dumps({"d": "</script><b>&\u2028"}, ensure_ascii=False)
    assert json.loads(json_in_html(text)) == json.loads(text) and "<" not in json_in_html(text)


def test_a_caption_drawn_on_the_contact_sheet_is_one_line_within_its_width():
    from PIL import ImageDraw, ImageFont

    from us4.release.contact_sheet import _fit

    draw, font = ImageDraw.Draw(Image.new("L", (10, 10))), ImageFont.load_default()
    label = "pneu\n\n## Licence\x1b[2J " + "x" * 200
    caption = _fit(draw, font, label, 152)
    assert "\n" not in caption and "\x1b" not in caption and caption.endswith("...")
    assert caption.startswith("pneu\\n\\n## Licence\\x1b") and draw.textlength(caption, font=font) <= 152
    assert _fit(draw, font, "reg", 152) == "reg"
