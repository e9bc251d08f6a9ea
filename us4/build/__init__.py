"""Recipe + raw clip folders -> a release folder (see docs/architecture.md)."""
from __future__ import annotations

from .run import BuildSummary, build_release

__all__ = ["BuildSummary", "build_release"]
