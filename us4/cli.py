"""The command line: thin click commands over the library. No logic lives here."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .errors import Us4Error


class _Group(click.Group):
    """Turns the project's own errors into one clear line and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Us4Error as exc:
            click.echo(f"us4: error: {exc}", err=True)
            for problem in getattr(exc, "problems", [])[:50]:
                click.echo(f"  {problem}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="us4")
def main() -> None:
    """us4: raw ultrasound videos -> versioned, verifiable dataset releases."""


@main.command()
def sources() -> None:
    """List the registered sources: corpus, organ, probe, classes, licence, expected counts."""
    from .registry import SOURCES

    rows = [("source", "corpus", "organ", "probe", "classes (prefix)", "videos", "images", "licence")]
    for s in SOURCES.values():
        classes = ", ".join(f"{c.name} ({'/'.join(c.prefixes)})" for c in s.classes)
        rows.append((s.name, s.corpus, s.organ, s.probe, classes,
                     str(s.expected_videos or "-"), str(s.expected_images or "-"), s.licence))
    _table(rows)


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


# --- media: probe -----------------------------------------------------------

# --- build: build, demo -----------------------------------------------------

# --- release: verify, stats, audit, card, diff ------------------------------

# --- hub: publish, download, mirror -----------------------------------------

# --- train: benchmark -------------------------------------------------------
