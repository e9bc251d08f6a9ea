"""A clip that could not be used: a value for the release's failure ledger, not an exception."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Failure:
    source: str
    path: str  # relative to the source's raw folder
    sha256: str | None
    stage: str  # plan (label), probe, sample, decode, crop, encode
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return f"{self.source}/{self.path}: {self.stage}: {self.reason}"
