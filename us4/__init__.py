"""us4: raw ultrasound videos -> versioned, verifiable dataset releases, on the Hugging Face Hub, benchmarked with USCL."""
from __future__ import annotations

import os
from typing import Any

from .version import __version__

__all__ = ["__version__", "load"]


def load(source: str | os.PathLike[str], revision: str | None = None, config: str = "frames", *,
         split: str | None = None, sources: list[str] | None = None, endpoint: str | None = None,
         token: str | None = None, verify: bool = True, quiet: bool = True) -> Any:
    """Load a release as a `datasets.DatasetDict` (or `Dataset` with `split=`), images decoded.

    `source` is a release folder or a repository `ORG/NAME` (with `revision`, e.g. "v1.0.0";
    or written "ORG/NAME@v1.0.0"). A repository revision is downloaded once per commit into
    `$US4_CACHE` (default `$HF_HOME/us4`) and verified against its lock before use; a folder
    is verified in place (`verify=False` skips it). `sources` limits the download and the
    rows to some of the release's sources (and `split` to one split): only their shards are
    fetched, and verified against the full lock. `endpoint` names a mirror, e.g.
    "http://127.0.0.1:8090" (default: $HF_ENDPOINT, else the Hub).

    >>> ds = load("releases/pocus", config="frames")            # doctest: +SKIP
    >>> ds["fold0"][0]["image"].size                             # doctest: +SKIP
    """
    from .hub.load import load_release

    return load_release(source, revision, config, split=split, sources=sources, endpoint=endpoint, token=token,
                        verify=verify, quiet=quiet)
