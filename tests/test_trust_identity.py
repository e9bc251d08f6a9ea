"""Trust, parts 2 and 5 of issue 14: no value of a de-identified source (a sheet cell, a DICOM
tag, a file or folder name, text burned into the pixels) reaches the release, the console or
an error; burned-in text left in on defaults is said loudly; every value from outside is
escaped where we write it (Markdown, HTML, CSV, a console line); a sheet naming one clip twice
with two labels is refused; the card says why no text check ran."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner, Result
from PIL import Image

from us4.cli import main
from us4.escape import csv_cell, json_in_html, markdown, one_line
from us4.phantom import PLANTED_IDENTITY, write_phantom_clip, write_phantom_dicom
from us4.release.read import open_release

MRN = "MRN12345678"
PATIENT = f"DOE^JOHN {MRN}"  # a label cell holding a patient, as a careless sheet has it
FOLDER = f"DOE_JOHN {MRN}"  # the export's folder, named by the patient
FILE = f"DOE^JOHN-{MRN}"  # ... and its files
GROUP = "PATIENT-GROUP-PLANTED"  # the sheet's grouping column
TEXT = "SAINT NOWHERE INFIRMARY"  # burned into the pixels
FREE_TEXT = {"SeriesDescription": "PLANTED SERIES NOTE", "ImageComments": "PLANTED IMAGE COMMENT",
             "PatientComments": "PLANTED PATIENT COMMENT"}
IDENTITY = {**PLANTED_IDENTITY, **FREE_TEXT}
PLANTS = [MRN, "DOE^JOHN", "DOE_JOHN", GROUP, TEXT, "INFIRMARY", *IDENTITY.values(), "1.2.826.0.1.3680043.10.9471"]


def dicom_recipe(tmp: Path, sheet: str = "labels.csv", **source) -> Path:
    spec = {"organ": "heart", "probe": "phased", "input": "dicom", "fps": 20, "classes": ["a", "b"],
            "label": {"sheet": sheet, "key": "path", "column": "grade"}, "sampling": {"every_n": 2},
            "crop": "none", "text": "mask", **source}  # ids: hash, the default of DICOM
    path = tmp / "hosp.yaml"
    path.write_text(yaml.safe_dump({"name": "hosp", "version": "0.1.0", "seed": 1, "sources": {"hosp": spec},
                                    "dedup": {"threshold": 0}, "splits": {"kind": "holdout", "validation": 0.5,
                                                                          "group_column": "patient"}}))
    return path


def write_sheet(path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...] = ("path", "grade", "patient")
                ) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def build(recipe: Path, source: str, raw: Path, out: Path) -> Result:
    return CliRunner().invoke(main, ["build", str(recipe), "--raw", f"{source}={raw}", "--out", str(out),
                                     "--workers", "1", "--quiet"])


def every_byte(root: Path) -> str:
    """Every byte of a folder as lower-case text: each Parquet file raw, decoded column by column
    (image paths included) and its schema metadata, each PNG's text chunks, every other file."""
    parts = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        parts.append(p.read_bytes().decode("latin-1"))
        if p.suffix == ".parquet":
            table = pq.read_table(p)
            images = table.column("image").to_pylist() if "image" in table.column_names else []
            parts += [str(table.schema.metadata), str(table.select([c for c in table.column_names
                                                                     if c != "image"]).to_pylist())]
            for image in images:
                parts.append(str(image["path"]))
                with Image.open(io.BytesIO(image["bytes"])) as im:
                    parts.append(str(im.info))
    return "\n".join(parts).lower()


def leaked(*texts: str) -> list[str]:
    everything = "\n".join(texts).lower()
    return [p for p in PLANTS if p.lower() in everything]


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A hospital export on a hashed DICOM source with identity in every field: the folder and
    file names, every tag class and free-text descriptions, text burned into the pixels, a
    label cell holding a patient, a grouping column, a truncated file, a series with a
    truncated file, and a file that is not DICOM whose suffix is the patient's number."""
    root = tmp_path_factory.mktemp("trust") / "export"
    folder = root / FOLDER
    text = f"{TEXT} 12:34"
    for i, syntax in enumerate(("rle", "jpeg-baseline", "rle")):
        photometric = "YBR_FULL_422" if syntax == "jpeg-baseline" else "MONOCHROME2"
        write_phantom_dicom(folder / f"{FILE}_{i}.dcm", seed=i, n_frames=6, transfer_syntax=syntax,
                            photometric=photometric, identity=IDENTITY, text=text)
    cut = write_phantom_dicom(folder / f"{FILE}_cut.dcm", seed=5, n_frames=6, transfer_syntax="raw-explicit-le",
                              identity=IDENTITY, text=text)[0]
    cut.write_bytes(cut.read_bytes()[:-1000])
    series = write_phantom_dicom(folder / f"SERIES {FILE}", seed=6, n_frames=4, transfer_syntax="raw-explicit-le",
                                 identity=IDENTITY, text=text, multi_frame=False)
    for k, f in enumerate(series):  # the series' files named by the patient too; the last one cut short
        f.rename(f.with_name(f"{FILE}_{k + 1}.dcm"))
    last = folder / f"SERIES {FILE}" / f"{FILE}_{len(series)}.dcm"
    last.write_bytes(last.read_bytes()[:-500])
    (folder / f"notes DOE.{MRN}").write_text(f"{PATIENT} seen by Dr PLANTED\n")
    write_sheet(root / "labels.csv", [(f"{FOLDER}/{FILE}_0.dcm", "a", GROUP), (f"{FOLDER}/{FILE}_1.dcm", "b", GROUP),
                                      (f"{FOLDER}/{FILE}_2.dcm", PATIENT, GROUP), (f"{FOLDER}/{FILE}_cut.dcm", "a", ""),
                                      (f"{FOLDER}/SERIES {FILE}", "b", GROUP)])
    return root


def test_no_value_of_a_hashed_dicom_source_reaches_the_release_or_the_console(export, tmp_path):
    pytest.importorskip("rapidocr", reason="text: mask needs the burned-in text detector (us4[text])")
    out = tmp_path / "rel"
    result = build(dicom_recipe(tmp_path), "hosp", export, out)
    assert result.exit_code == 3, result.output  # built, some clips failed
    lock = open_release(out).lock
    assert len(lock.clips) == 2 and {c.text for c in lock.clips} == {"masked"}
    assert sorted((str(f.stage), f.reason.split(" bytes into")[0]) for f in lock.failures) == [
        ("plan", "unreadable label: row 4 of labels.csv: 'grade' is not one of a, b"),
        ("probe", "file 4 of 4: truncated pixel data: the file ends 42508"),  # the series' cut file, by position
        ("probe", "truncated pixel data: the file ends 257048")]
    assert [e.reason for e in lock.excluded] == ["not DICOM (no DICM marker; suffix '(withheld)')"]
    assert leaked(every_byte(out), result.output) == []
    # what was left out is the holder's, beside the release: the cell, the suffix, the text read
    local = tmp_path / "rel.local"
    withheld = list(csv.DictReader(open(local / "withheld.csv")))
    assert sorted(r["reason"] for r in withheld) == [
        "not DICOM (no DICM marker; suffix '.mrn12345678')",
        f"unreadable label: row 4 of labels.csv: 'grade' is not one of a, b: it is {PATIENT!r}"]
    assert {r["path"] for r in withheld} == {f"{FOLDER}/{FILE}_2.dcm", f"{FOLDER}/notes DOE.{MRN}"}
    assert "INFIRMARY" in (local / "text.json").read_text()


@pytest.mark.parametrize("case", ["one clip twice", "no header row", "no usable clip"])
def test_a_failing_hashed_build_names_no_identity_in_its_error(export, tmp_path, case):
    raw = tmp_path / "raw"
    shutil.copytree(export / FOLDER, raw / FOLDER,
                    ignore=shutil.ignore_patterns("*_2.dcm", "*cut*", "SERIES*", "notes*"))  # two clips alone
    one, two = f"{FOLDER}/{FILE}_0.dcm", f"{FOLDER}/{FILE}_1.dcm"
    header = ("path", "grade", "patient")
    rows, header, expected = {
        "one clip twice": ([(one, "a", GROUP), (two, "b", GROUP), (one, "b", GROUP)], header,
                           "labels.csv: rows 2 and 4 name one clip with different 'grade' values; "
                           "keep one row per clip"),
        "no header row": ([(one, "a", GROUP), (two, PATIENT, GROUP)], (),
                          "labels.csv: sheet has no 'path' column (its first row has 3 cells; "
                          "is the header row missing?)"),
        "no usable clip": ([(one, PATIENT, GROUP), (two, f"{PATIENT}!", GROUP)], header,
                           "no clip could be used (2 failed, 0 excluded by the recipe); nothing to release; "
                           "1 x plan: unreadable label: row "),
    }[case]
    write_sheet(raw / "labels.csv", rows, header)
    result = build(dicom_recipe(tmp_path, text="off"), "hosp", raw, tmp_path / "out")
    assert result.exit_code == 1 and expected in result.output, result.output
    assert leaked(result.output, str(result.exception or "")) == []


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


def test_burned_in_text_left_in_on_defaults_is_warned_and_heads_the_card(lungs, tmp_path):
    pytest.importorskip("rapidocr", reason="text: warn finds text with the detector (us4[text])")
    out = tmp_path / "rel"
    result = build(video_recipe(tmp_path), "lungs", lungs, out)  # ids: path and text: warn, the defaults
    assert result.exit_code == 0, result.output
    assert [c.text for c in open_release(out).lock.clips] == ["warned", "none"]
    warning = ("warning: source lungs: text burned into the frames of 1 of its 2 clips is published as it is "
               "(recipe: `text: warn`); such text often names a patient, a place or a date. To paint it out, set "
               "`text: mask` for lungs in the recipe (`text: exclude` leaves those clips out). Its file names are "
               "published too (`ids: path`); `ids: hash` names clips by their content instead.")
    assert warning in result.output.splitlines()  # printed even with --quiet
    card = (out / "README.md").read_text()
    body = card.split("\n---\n", 1)[1]
    first_screen = body[:body.index("\n|")]  # before the first table
    assert "**Burned-in text.** source lungs: text burned into the frames of 1 of its 2 clips" in first_screen


def test_the_card_says_the_recipe_turned_the_text_check_off(lungs, tmp_path):
    pytest.importorskip("rapidocr", reason="the case is a detector that is installed and not asked for")
    out = tmp_path / "rel"
    result = build(video_recipe(tmp_path, text="off"), "lungs", lungs, out)
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    assert "not installed" not in card
    assert "No text check ran: the recipe turns it off (`text: off`) for every source" in card


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


@pytest.mark.parametrize("ids", ["path", "hash"])
def test_a_sheet_naming_one_clip_twice_with_two_labels_is_refused(lungs, tmp_path, ids):
    raw = tmp_path / "raw"
    shutil.copytree(lungs, raw)
    clip = f"pneu_{FOLDER}.mp4"
    recipe = video_recipe(tmp_path, label={"sheet": "labels.csv", "key": "path", "column": "grade"}, text="off",
                          ids=ids)
    write_sheet(raw / "labels.csv", [(clip, "pneu"), ("reg_clean.mp4", "reg"), (clip, "pneu")], ("path", "grade"))
    assert build(recipe, "lungs", raw, tmp_path / "same").exit_code == 0  # twice alike: no doubt which holds
    write_sheet(raw / "labels.csv", [(clip, "pneu"), ("reg_clean.mp4", "reg"), (clip, "reg")], ("path", "grade"))
    result = build(recipe, "lungs", raw, tmp_path / "two")
    named = f"both name {clip!r}" if ids == "path" else "name one clip"
    assert result.exit_code == 1, result.output
    assert result.output == (f"us4: error: {raw / 'labels.csv'}: rows 2 and 4 {named} with different 'grade' values; "
                             "keep one row per clip\n")
    assert not (tmp_path / "two").exists()  # refused before anything was written


def test_a_hashed_source_names_metadata_sheet_rows_without_files_by_number(lungs, tmp_path):
    """The registry's sheet (POCUS) lists rows whose file is not here; on a hashed source the
    list names each by its row, not by the file name the sheet gives."""
    data = tmp_path / "data"
    (data / "pocus_videos" / "convex").mkdir(parents=True)
    shutil.copy(lungs / "reg_clean.mp4", data / "pocus_videos" / "convex" / "Reg_clean.mp4")
    write_sheet(data / "dataset_metadata.csv", [("Reg_clean", "regular", "video", "convex"),
                                                (f"Cov_{FOLDER}", "COVID-19", "video", f"convex {MRN}"),
                                                (f"Cov_{FILE}", "COVID-19", "video", "convex")],
                ("Filename", "Label", "Type", "Probe"))
    recipe = tmp_path / "p.yaml"
    recipe.write_text(yaml.safe_dump({"name": "p", "version": "1", "sources": {"pocus": {
        "sampling": {"evenly": 2}, "ids": "hash", "text": "off"}}, "splits": {"kind": "holdout", "validation": 0.5}}))
    out = tmp_path / "rel"
    result = CliRunner().invoke(main, ["build", str(recipe), "--raw", f"pocus={data}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert open_release(out).lock.sheet.missing == ["row 3 (covid, probe withheld)", "row 4 (covid, convex)"]
    assert leaked(every_byte(out), result.output) == []


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

