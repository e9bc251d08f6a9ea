"""What the README promises, end to end on the tiny config: `us4 demo`, `us4 card --benchmark`,
the plots, and the benchmark joining the published release as evidence."""
from __future__ import annotations

import json

from click.testing import CliRunner
from PIL import Image
import pytest

from us4.cli import main
from us4.hub.publish import publish_git
from us4.release.read import open_release
from us4.release.verify import verify_release

pytestmark = pytest.mark.slow  # end-to-end (the whole demo from an installed wheel): python -m pytest -m slow


def test_demo_then_card_benchmark_then_evidence(installed_demo, tmp_path):
    out = installed_demo.out  # the session's `us4 demo --config tiny --device cpu`, run from the installed wheel
    assert installed_demo.demo.returncode == 0, installed_demo.demo.stderr[-3000:]
    release = out / "releases" / "us4-phantom"
    record = json.loads((out / "benchmark" / "benchmark.json").read_text())
    # a phantom release says so in every record derived from it
    assert record["releases"]["pretrain"]["name"] == "us4-phantom" and record["releases"]["pretrain"]["phantom"]
    assert record["releases"]["eval"]["verified"]["problems"] == 0
    assert "folds" in record["releases"]["eval"]["split_rule"]
    for png in (out / "benchmark").glob("*.png"):
        with Image.open(png) as im:
            assert im.format == "PNG" and im.width > 100
    assert list((out / "benchmark").glob("*.png"))
    card = (release / "README.md").read_text()
    assert "## Benchmark" in card and "PHANTOM" in card and verify_release(open_release(release)).ok

    # `us4 card --benchmark` on the evaluation release, then publish: evidence, data unchanged
    pocus = out / "releases" / "pocus"
    mirror = tmp_path / "mirror"
    first = publish_git(open_release(pocus), mirror, "demo/pocus-phantom", quiet=True)
    carded = CliRunner().invoke(main, ["card", str(pocus), "--benchmark", str(out / "benchmark" / "benchmark.json")])
    assert carded.exit_code == 0, carded.output
    assert "## Benchmark" in (pocus / "README.md").read_text() and verify_release(open_release(pocus)).ok
    published = CliRunner().invoke(main, ["publish", str(pocus), "--git", str(mirror), "--repo", "demo/pocus-phantom"])
    assert published.exit_code == 0, published.output
    assert f"{first.tag}+evidence.1" in published.output and "data unchanged" in published.output
