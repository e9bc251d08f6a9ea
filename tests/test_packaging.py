"""us4 from an installed wheel, not only from a checkout: recipes and manifests ship as package
data, so the demo and `us4 build pocus` run from any folder."""
from __future__ import annotations

import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import click
import tqdm
import yaml

from .conftest import REPO


def _clean_copy(dest: Path) -> Path:
    """The checkout's files as a fresh clone has them: no build/ left from an earlier build (a
    module deleted from the source would still ship from there), nothing ignored."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (REPO / name).is_file():  # a tracked file deleted in the working tree is left out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def _borrow_dependencies(python: Path) -> None:
    """The dependencies come from this interpreter's site-packages, us4 itself only from the wheel.
    A venv's system_site_packages would give the base interpreter's, not those of the venv the suite
    runs in: list this interpreter's folders in a .pth file instead (plain lines: the .pth files
    inside them, such as an editable us4's, are not run)."""
    folders = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "borrowed.pth").write_text("".join(f"{f}\n" for f in folders if Path(f).is_dir()))


def test_the_demo_runs_from_an_installed_wheel_in_another_folder(tmp_path):
    dist = tmp_path / "dist"
    source = _clean_copy(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(source)], check=True, capture_output=True)
    wheel = next(dist.glob("us4-*.whl"))
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")
               and not n.startswith(("us4/manifests/", "us4/pipelines/"))}  # package data, mapped from the root
    assert shipped == {p.relative_to(source).as_posix() for p in (source / "us4").rglob("*.py")}
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _borrow_dependencies(python)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import us4; print(us4.__file__, us4.__version__)"], cwd=elsewhere,
                           capture_output=True, text=True, check=True).stdout
    assert str(env_dir) in where and str(REPO) not in where
    # ...and its dependencies from this interpreter's environment, whichever it is (a venv's own ones too)
    deps = subprocess.run([str(python), "-c", "import click, tqdm, yaml; print(click.__file__, tqdm.__file__, "
                           "yaml.__file__)"], cwd=elsewhere, capture_output=True, text=True, check=True).stdout
    assert deps.split() == [click.__file__, tqdm.__file__, yaml.__file__]
    demo = subprocess.run([str(env_dir / "bin" / "us4"), "demo", "--no-benchmark", "--out", "demo", "-q"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert (elsewhere / "demo" / "releases" / "us4-phantom" / "release.json").is_file()
    assert "verified" in demo.stdout or "downloaded" in demo.stdout
