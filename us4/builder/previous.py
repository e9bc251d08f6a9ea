"""The splits of an earlier release (`--previous`, or the recipe's `splits.inherit`): a
release folder, a lock file, or the name of a manifest us4 ships (`pocus-1.0.0`)."""
from __future__ import annotations

from pathlib import Path

from ..contract.lock import Previous
from ..errors import RecipeError, ReleaseError
from ..release.read import read_lock_ref
from .splits import PreviousSplits


def read_previous(ref: str | Path | None, base: Path | None = None) -> tuple[Previous, PreviousSplits] | None:
    """The earlier release's identity and its clips' splits; None when `ref` is None.
    A relative path is tried against `base` (the recipe's folder) too."""
    if ref is None:
        return None
    try:
        lock, _ = read_lock_ref(ref, base)
    except ReleaseError as exc:
        raise RecipeError(f"previous release: {exc}") from None
    return (Previous(name=lock.name, version=lock.version, lock_sha256=lock.sha256, removed=[]),
            PreviousSplits(name=lock.name, version=lock.version, by_id={c.video_id: c.split for c in lock.clips},
                           by_sha256={c.sha256: c.split for c in lock.clips},
                           clips=tuple((c.video_id, c.sha256) for c in lock.clips)))


def removed_clips(previous: PreviousSplits, jobs) -> list[str]:
    """The earlier release's clips that no planned clip is, by video id or by content."""
    return previous.removed(jobs)
