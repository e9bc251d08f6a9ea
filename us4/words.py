"""Words for messages and cards (a leaf module)."""
from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """"1 clip", "2 clips", "0 clips"; `many` for irregular plurals ("1 repository", "2 repositories")."""
    return f"{count} {noun if count == 1 else (many or noun + 's')}"
