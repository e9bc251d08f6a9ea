"""`us4.load`: a release (local folder or Hub revision, all or some of its sources) as a
`datasets` object, verified first."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..contract.lock import LOCK_NAME
from ..errors import ReleaseError, VerificationError
from ..release.read import Release, open_release
from ..release.verify import verify_release
from .download import resolve_release


def open_verified(source: str | Path, revision: str | None = None, *, sources: Sequence[str] | None = None,
                  endpoint: str | None = None, token: str | None = None, verify: bool = True,
                  quiet: bool = True) -> Release:
    """A release folder, or a Hub revision downloaded (of some sources) into the cache, verified
    against its lock (a fresh download was verified on arrival)."""
    resolved = resolve_release(source, revision, endpoint=endpoint, token=token, quiet=quiet, sources=sources)
    release = open_release(resolved.path)
    expect = release.lock.files(sources) if sources else None  # unknown sources: an error
    if verify and not resolved.verified:
        result = verify_release(release, expect=expect)
        if result.problems:
            raise VerificationError(f"{resolved.path}: {len(result.problems)} file(s) differ from {LOCK_NAME}; "
                                    f"first: {result.problems[0]}", result.problems)
    return release


def load_release(source: str | Path, revision: str | None = None, config: str = "frames", *,
                 split: str | None = None, sources: Sequence[str] | None = None, endpoint: str | None = None,
                 token: str | None = None, verify: bool = True, quiet: bool = True) -> Any:
    release = open_verified(source, revision, sources=sources, endpoint=endpoint, token=token, verify=verify,
                            quiet=quiet)
    data_files: dict[str, list[str]] = {}
    for shard in release.shards(config, present_only=True):
        if not sources or shard.source in sources:
            data_files.setdefault(shard.split, []).append(str(release.path(shard.path)))
    if not data_files or (split is not None and split not in data_files):
        raise ReleaseError(f"{release.root}: no {config!r} shards here for "
                           f"{'split ' + split if split else 'the sources asked for'}")
    import datasets  # heavy; only once there is something to load

    # the shards' schema carries the Hugging Face features: `image` decodes as an Image
    return datasets.load_dataset("parquet", data_files=dict(sorted(data_files.items())), split=split)
