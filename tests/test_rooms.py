"""Rooms (issue 16, part 3): the benchmark record is one typed model, validated where it is read
from disk; an old record still reads; the phantom generators are no part of media."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from us4.cli import main
from us4.contract.benchmark import read_benchmark
from us4.contract.benchmark_card import benchmark_markdown
from us4.errors import ReleaseError
from us4.release.read import open_release

OLD_RECORD = Path(__file__).parent / "fixtures" / "benchmark-0.2.0.json"


def test_a_record_of_us4_0_2_0_reads_renders_and_dumps_as_written():
    data = OLD_RECORD.read_bytes()
    record = read_benchmark(data)
    assert record.pretraining.audit is None and record.evaluation.class_counts is None  # not recorded then
    assert record.dump() == json.dumps(json.loads(data), indent=2) + "\n"
    md = benchmark_markdown(record)
    assert md.startswith("## Benchmark") and "us4 0\\.2.0, seed 0." in md and "(leaked)" not in md


@pytest.mark.parametrize("change, field", [
    (lambda r: r["results"]["uscl"]["honest"].update(accuracy="high"), "results.uscl.honest.accuracy"),
    (lambda r: r["code"].pop("train_code_sha256"), "missing field code.train_code_sha256"),
    (lambda r: r["pretraining"]["variants"]["uscl"].update(spg="yes please"), "pretraining.variants.uscl.spg"),
    (lambda r: r["wall_s"].pop("total"), "wall_s"),
])
def test_a_damaged_record_is_one_line_naming_the_field(change, field, tmp_path):
    raw = json.loads(OLD_RECORD.read_text())
    change(raw)
    with pytest.raises(ReleaseError, match=r"^x\.json: not a record written by us4 benchmark: .*" + field):
        read_benchmark(json.dumps(raw), "x.json")


def test_card_refuses_a_damaged_record_naming_the_field_and_changes_nothing(phantom_pocus_release, tmp_path):
    import shutil

    rel = tmp_path / "rel"
    shutil.copytree(phantom_pocus_release, rel)
    before = {p.name: p.read_bytes() for p in rel.iterdir() if p.is_file()}
    raw = json.loads(OLD_RECORD.read_text())
    raw["evaluation"]["folds"][0]["test_frames"] = "many"
    (tmp_path / "benchmark.json").write_text(json.dumps(raw))
    result = CliRunner().invoke(main, ["card", str(rel), "--benchmark", str(tmp_path / "benchmark.json")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("us4: error: benchmark.json: not a record written by us4 benchmark: "
                           "evaluation.folds.0.test_frames") and line.endswith("the release was left as it was")
    assert {p.name: p.read_bytes() for p in rel.iterdir() if p.is_file()} == before
    assert "benchmark.json" not in open_release(rel).lock.attachments


def test_media_neither_exports_nor_imports_the_phantom_generators():
    code = ("import sys, us4.media as m; import us4.builder.run, us4.release.verify; "
            "print(sorted(n for n in m.__all__ if 'phantom' in n.lower() or n == 'PLANTED_IDENTITY'), "
            "'us4.phantom' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[] False"
