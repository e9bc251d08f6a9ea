"""Recipe + raw clip folders -> a release folder (see docs/architecture.md)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run import BuildSummary, build_release

__all__ = ["BuildSummary", "build_release"]


def __getattr__(name: str) -> Any:
    # Lazy: `import us4.builder.ingest` (what a worker needs) must not import the writer,
    # the card and the rest of `run`.
    if name in __all__:
        from . import run

        return getattr(run, name)
    raise AttributeError(name)
