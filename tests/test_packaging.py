"""us4 from an installed wheel, not only from a checkout: recipes and manifests ship as package
data, so the demo and `us4 build pocus` run from any folder."""
from __future__ import annotations

import subprocess
import zipfile

import click
import tqdm
import yaml
import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow  # end-to-end (a wheel built and installed in a venv): python -m pytest -m slow


def test_the_demo_runs_from_an_installed_wheel_in_another_folder(installed_demo):
    us4 = installed_demo
    shipped = {n for n in zipfile.ZipFile(us4.wheel).namelist() if n.endswith(".py")
               and not n.startswith(("us4/manifests/", "us4/pipelines/"))}  # package data, mapped from the root
    assert shipped == {p.relative_to(us4.source).as_posix() for p in (us4.source / "us4").rglob("*.py")}
    where = subprocess.run([str(us4.python), "-c", "import us4; print(us4.__file__, us4.__version__)"],
                           cwd=us4.elsewhere, capture_output=True, text=True, check=True).stdout
    assert str(us4.env_dir) in where and str(REPO) not in where
    # ...and its dependencies from this interpreter's environment, whichever it is (a venv's own ones too)
    deps = subprocess.run([str(us4.python), "-c", "import click, tqdm, yaml; print(click.__file__, tqdm.__file__, "
                           "yaml.__file__)"], cwd=us4.elsewhere, capture_output=True, text=True, check=True).stdout
    assert deps.split() == [click.__file__, tqdm.__file__, yaml.__file__]
    assert us4.demo.returncode == 0, us4.demo.stderr[-3000:]
    assert (us4.out / "releases" / "us4-phantom" / "release.json").is_file()
    assert "verified" in us4.demo.stdout or "downloaded" in us4.demo.stdout
