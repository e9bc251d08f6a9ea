"""Content hashes shared by the build, the release checks and the hub (a leaf module)."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def clip_digest(files: Sequence[str | Path]) -> tuple[str, int]:
    """(sha256, bytes) of a clip: of its file, or for a multi-file clip (a series, an image
    sequence) of the ordered list of its files' hashes (content only: names are identity)."""
    if len(files) == 1:
        return sha256_file(files[0]), os.path.getsize(files[0])
    digests = [sha256_file(f) for f in files]
    return hashlib.sha256(("\n".join(digests)).encode()).hexdigest(), sum(os.path.getsize(f) for f in files)


def canonical_json(obj: object) -> bytes:
    """One serialisation per value: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_json(obj: object) -> str:
    return hashlib.sha256(canonical_json(obj)).hexdigest()
