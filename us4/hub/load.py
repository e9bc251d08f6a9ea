"""`us4.load`: a release (local folder or Hub revision) as a `datasets` object, verified first."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import VerificationError
from ..release.read import LOCK_NAME, open_release
from ..release.verify import verify_release
from .download import resolve_release


def load_release(source: str | Path, revision: str | None = None, config: str = "frames", *,
                 split: str | None = None, endpoint: str | None = None, token: str | None = None,
                 verify: bool = True, quiet: bool = True) -> Any:
    resolved = resolve_release(source, revision, endpoint=endpoint, token=token, quiet=quiet)
    path = resolved.path
    release = open_release(path)
    if verify and not resolved.verified:  # a fresh download was verified on arrival
        problems = verify_release(release)
        if problems:
            raise VerificationError(f"{path}: {len(problems)} file(s) differ from {LOCK_NAME}; "
                                    f"first: {problems[0]}", problems)
    import datasets  # heavy; only once there is something to load

    # the card's `configs` and `dataset_info` tell `datasets` the splits and that `image` is an Image
    return datasets.load_dataset(str(release.root), config, split=split)
