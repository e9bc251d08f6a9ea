"""The lock (`release.json`): what a release was built from and what it holds."""
from __future__ import annotations

import platform
import sys

from .. import __version__
from ..recipe import Recipe
from .failure import Failure
from .plan import Plan
from .writer import Written

LOCK_FORMAT = "us4-release/1"


def environment() -> dict[str, str]:
    """Versions of everything the release's bytes depend on."""
    import av
    import numpy
    import PIL
    import pyarrow
    from PIL import features

    ffmpeg = ", ".join(f"{k} {'.'.join(map(str, v))}" for k, v in sorted(av.library_versions.items())
                       if k in ("libavcodec", "libavformat", "libavutil", "libswscale"))
    return {
        "us4": __version__,
        "python": platform.python_version(),
        "av": av.__version__,
        "ffmpeg": ffmpeg,
        "pillow": PIL.__version__,
        "zlib": str(features.version("zlib")),
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def make_lock(recipe: Recipe, plan: Plan, failures: list[Failure], written: Written) -> dict:
    return {
        "format": LOCK_FORMAT,
        "name": recipe.name,
        "version": recipe.version,
        "description": recipe.description,
        "recipe": recipe.to_dict(),
        "recipe_sha256": recipe.sha256,
        "environment": environment(),
        "inputs": plan.inputs,
        "shards": written.shards,
        "lineage": written.lineage,
        "failures": [f.to_dict() for f in sorted(failures, key=lambda f: (f.source, f.path))],
        "excluded": plan.excluded,
        "sheet": {"missing_files": plan.sheet_missing, "label_overrides": plan.label_overrides},
        "counts": {
            "videos": written.videos,
            "frames": written.frames,
            "duplicates_dropped": written.duplicates_dropped,
            "failures": len(failures),
            "excluded": len(plan.excluded),
            "by_split_label": written.by_split_label,
        },
        "attachments": {},
    }
