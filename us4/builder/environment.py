"""The versions a release's bytes depend on, and the host it was built on (information only)."""
from __future__ import annotations

import platform
import sys
from functools import lru_cache


@lru_cache(maxsize=2)
def byte_libraries(text: bool = True) -> dict[str, str]:
    """Versions of every library that shapes a release's bytes: the decoders (PyAV and its
    FFmpeg, pydicom and its JPEG plugins, Pillow and its zlib), the PNG encoder of the frames
    and the zlib it compresses with, the Parquet writer, numpy,
    and, when some source checks for burned-in text (`text`), the detector where it is
    installed (it places the masks). Part of each clip's cache key, so a build resumed after
    an upgrade re-ingests instead of mixing encoders."""
    import zlib

    import av
    import numpy
    import PIL
    import pyarrow
    from PIL import features

    from ..media.pixels import PNG_ENCODER

    ffmpeg = ", ".join(f"{k} {'.'.join(map(str, v))}" for k, v in sorted(av.library_versions.items())
                       if k in ("libavcodec", "libavformat", "libavutil", "libswscale"))
    out = {
        "av": av.__version__,
        "ffmpeg": ffmpeg,
        "pillow": PIL.__version__,
        "zlib": str(features.version("zlib")),
        "png": f"{PNG_ENCODER}; zlib {zlib.ZLIB_RUNTIME_VERSION}",
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
    }
    out.update(_dicom_libraries())
    if text:
        out.update(_text_engine())
    return out


def _text_engine() -> dict[str, str]:
    from ..media import text

    try:
        return text.text_engine_versions()
    except text.TextEngineMissing:
        return {}


def _dicom_libraries() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def host() -> dict[str, str]:
    """Where and by which us4 the build ran: information, never a reason for bytes to differ
    (what us4 makes of a clip is versioned by the ingest version in the cache key)."""
    from ..version import __version__

    return {"us4": __version__, "python": platform.python_version(), "platform": f"{sys.platform}-{platform.machine()}"}
