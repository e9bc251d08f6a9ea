"""The command line: thin click commands over the library. No logic lives here."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from .version import __version__
from .errors import Us4Error
from .files import storage_error
from .train.config import CONFIGS


class _Group(click.Group):
    """Turns the project's own errors, and a failing disk under any command, into one clear line
    and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Us4Error as exc:
            click.echo(f"us4: error: {exc}", err=True)
            for problem in getattr(exc, "problems", [])[:50]:
                click.echo(f"  {problem}", err=True)
            sys.exit(1)
        except OSError as exc:
            problem = storage_error(exc)
            if problem is None:
                raise
            click.echo(f"us4: error: {problem}", err=True)
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
        classes = ", ".join(f"{c.name} ({'/'.join(c.prefixes) or 'sheet: ' + '/'.join(c.sheet_labels)})"
                            for c in s.classes)
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

@main.command("probe")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Frame rate for image sequences and DICOM files without timing (what a recipe's fps says).")
def probe_cmd(paths: tuple[str, ...], fps: float | None) -> None:
    """Describe clips: container, codec, fps, frames, duration, size, rotation, transfer syntax.

    PATHS are clip files (videos, DICOM files) or folders, searched recursively for
    videos, DICOM files (by suffix .dcm/.dicom or the DICM marker; single-frame files of
    one series form one clip) and image sequences (a folder of png/jpg/tif frames);
    hidden files are skipped. A clip that cannot be read gets its reason in the
    `problem` column; the exit status is then 1, after every row is printed. DICOM
    files found in a folder that are no clips (a DICOMDIR, a report) are listed with
    their reason and do not change the exit status.
    """
    from .media import MediaError, list_clips, probe_clip
    from .media.dicom import syntax_name

    rows = [("path", "container", "codec", "fps", "frames", "duration", "size", "rotation", "transfer syntax",
             "problem")]
    failed = not_clips = 0
    for listed in list_clips(paths, fps):
        shown = listed.path
        if listed.ref is None:
            not_clips += 1
            rows.append((shown, "-", "-", "-", "-", "-", "-", "-", "-", listed.problem))
            continue
        try:
            i = probe_clip(listed.ref)
        except MediaError as exc:
            failed += 1
            rows.append((shown, "-", "-", "-", "-", "-", "-", "-", "-", exc.reason))
            continue
        rows.append((shown, i.container, i.codec, f"{i.fps:.3f}".rstrip("0").rstrip("."),
                     str(i.n_frames), f"{i.duration:.2f}s", f"{i.width}x{i.height}", str(i.rotation),
                     syntax_name(i.transfer_syntax) if i.transfer_syntax else "-", ""))
    if len(rows) == 1:
        click.echo("no clips found", err=True)
        sys.exit(1)
    _table(rows)
    if not_clips:
        click.echo(f"{not_clips} DICOM files are no clips (see the problem column)", err=True)
    if failed:
        click.echo(f"{failed} of {len(rows) - 1 - not_clips} clips could not be read", err=True)
        sys.exit(1)


# --- build: build, demo -----------------------------------------------------

def _parse_raw(values: tuple[str, ...]) -> dict[str, Path]:
    raw: dict[str, Path] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise click.BadParameter(f"{value!r}: expected SOURCE=DIR, e.g. pocus=covid19_ultrasound/data",
                                     param_hint="--raw")
        if name in raw:
            raise click.BadParameter(f"source {name!r} given twice", param_hint="--raw")
        raw[name] = Path(folder)
    return raw


@main.command()
@click.argument("recipe")
@click.option("--raw", "raw", multiple=True, required=True, metavar="SOURCE=DIR",
              help="Folder of a source's raw clips (repeat per source). POCUS: the dataset's data/ folder.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Release folder to create, or to resume building into.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Decoding processes [default: all cores]; with --scheduler local, the LocalCluster's workers.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run the per-clip work on a Dask cluster: tcp://HOST:PORT, or 'local' for a LocalCluster. Raw "
                   "folders and --out must be on storage every worker sees (see docs/scaling.md).")
@click.option("--retry-failed", is_flag=True, help="Ingest again the clips that failed in an earlier run.")
@click.option("--allow-empty", "allow_empty", multiple=True, metavar="SOURCE",
              help="Build even if SOURCE has no usable clip (repeat per source); it is recorded as a warning.")
@click.option("--previous", type=click.Path(path_type=Path), default=None, metavar="RELEASE_OR_MANIFEST",
              help="Keep the split of every clip this earlier release (folder or lock file) holds, unless that leaves a "
                   "split without a class or a class spread wider than its largest group forces (those move, each "
                   "with a warning); deal the new clips.")
@click.option("--version", "version", default=None, metavar="VERSION",
              help="The release's version, in place of the recipe's. Named like a release us4 ships but with other "
                   "clips, a build is versioned VERSION-local.HASH8 (see the README).")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bars or notes; failures, errors and burned-in text left in the frames only.")
def build(recipe: str, raw: tuple[str, ...], out: Path, workers: int | None, scheduler: str | None,
          retry_failed: bool, allow_empty: tuple[str, ...], previous: Path | None, version: str | None,
          quiet: bool) -> None:
    """Build a release from raw clips as RECIPE says (resumes an interrupted build).

    RECIPE is a recipe file, or the name of one us4 ships (pocus, us4).

    Exit status: 0 built, 3 built but some clips failed (see the failure ledger in
    release.json), 1 error, 130 interrupted (Ctrl-C) or 143 stopped (SIGTERM): run the same
    command again to resume.
    """
    from .builder import build_release
    from .contract.card import burned_in_text
    from .escape import one_line
    from .contract.layout import WORK_DIR
    from .release.read import open_release
    from .words import plural

    with _stops_cleanly(f"finished clips are kept in {out / WORK_DIR}: run the same command again to resume"):
        summary = build_release(recipe, _parse_raw(raw), out, workers=workers, scheduler=scheduler,
                                retry_failed=retry_failed, allow_empty=allow_empty, previous=previous,
                                version=version, progress=not quiet)
    if not quiet:
        n, unshipped = len(summary.sheet_missing), summary.sheet_missing_unshipped
        if n:
            def rows(k: int) -> str:
                return f"{plural(k, 'row')} {'names a clip' if k == 1 else 'name clips'}"

            parts = [f"{rows(unshipped)} the public repository does not ship either, so nothing is missing"
                     if unshipped else "",
                     f"{rows(n - unshipped)} the repository ships: this copy of data/ lacks "
                     f"{'it' if n - unshipped == 1 else 'them'}" if n > unshipped else ""]
            click.echo(f"note: {plural(n, 'metadata-sheet row')} {'names a clip' if n == 1 else 'name clips'} that "
                       f"{'is' if n == 1 else 'are'} not in this folder: " + "; ".join(x for x in parts if x)
                       + " (the list is in release.json: sheet.missing)", err=True)
        if summary.label_overrides:
            click.echo(f"note: {plural(summary.label_overrides, 'clip')} labelled by the metadata sheet over its "
                       "file name (listed in release.json: sheet.label_overrides)", err=True)
        _warnings(summary.warnings)
        if summary.previous_removed:
            gone = summary.previous_removed
            click.echo(f"note: {plural(len(gone), 'clip')} of the previous release {'is' if len(gone) == 1 else 'are'} "
                       f"gone: {one_line(', '.join(gone[:5]))}"
                       + (f", and {len(gone) - 5} more (release.json: previous.removed)" if len(gone) > 5 else ""),
                       err=True)
        if summary.phantom:
            click.echo(f"note: built from phantom clips (synthetic): the release is named {summary.name} "
                       f"{summary.version} and says so everywhere", err=True)
    for failure in summary.failures:
        click.echo(f"failed: {one_line(failure.line())}", err=True)
    for note in burned_in_text(open_release(summary.out).lock):  # may identify someone: said even with --quiet
        click.echo(f"warning: {note}", err=True)
    per_source = ", ".join(f"{s} {n}" for s, n in summary.per_source.items())
    click.echo(
        f"built {summary.out}: {plural(summary.videos, 'video')} ({per_source}), {plural(summary.frames, 'frame')} "
        f"({summary.duplicates_dropped} near-duplicates dropped, {plural(summary.groups, 'group')} of clips kept in one "
        f"split); {plural(len(summary.failures), 'clip')} failed, {plural(summary.excluded, 'file')} excluded by the "
        f"recipe, {plural(len(summary.warnings), 'warning')}; {summary.ingested} ingested, "
        f"{summary.reused} reused from an earlier run"
        + (f"; {summary.shipped.line(summary.version)}" if summary.shipped else "")
        + (f"; files for this machine only (ids, text read, values the ledger withholds) in {summary.local}"
           if summary.local else ""))
    if summary.failures:
        sys.exit(3)


@contextmanager
def _stops_cleanly(resume: str, transfers: bool = False) -> Iterator[None]:
    """Ctrl-C and SIGTERM (what `timeout`, SLURM and `docker stop` send) stop the block alike:
    its clean-up runs, one line says what is kept and how to resume (`resume`), and the exit
    status is 130, or 143 for SIGTERM. With `transfers` (a download, a publish), the process
    then ends without waiting for the network transfers still in flight in their threads
    (system.in_background): the next run resumes from what they wrote."""
    import os

    from .system import interrupt_status, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            yield
    except KeyboardInterrupt as exc:
        click.echo(f"us4: interrupted; {resume}", err=True)
        if transfers:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(interrupt_status(exc))
        sys.exit(interrupt_status(exc))


def _warnings(warnings: list, each: int = 3) -> None:
    """One line per warning, or per kind when a kind has more than `each` (the lock lists them all)."""
    from collections import defaultdict

    from .escape import one_line
    from .words import plural

    by_kind = defaultdict(list)
    for w in warnings:
        by_kind[w.kind].append(w)
    for kind, group in by_kind.items():
        if len(group) <= each:
            for w in group:
                click.echo(f"warning: {one_line(w.line())}", err=True)
        else:
            click.echo(f"warning: {plural(len(group), 'clip')}: {kind}: {one_line(group[0].message)} (e.g. "
                       f"{one_line(group[0].video_id or group[0].source)}; all are listed in release.json: warnings)",
                       err=True)


@main.command()
@click.option("--out", default=Path("us4-demo"), show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the phantom clips, the releases, the mirror and the benchmark.")
@click.option("--pocus", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Evaluate on a real POCUS data/ folder instead of phantom POCUS-like clips.")
@click.option("--no-benchmark", is_flag=True, help="Stop after the hub round trip.")
@click.option("--config", "config_name", type=click.Choice(list(CONFIGS)), default="smoke", show_default=True,
              help="Benchmark config (see us4 benchmark --config); tiny checks every stage in seconds.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="default: cuda when available")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def demo(out: Path, pocus: Path | None, no_benchmark: bool, config_name: str, device: str | None, quiet: bool) -> None:
    """The main job on the embedded default: phantom clips -> release -> verify, audit ->
    publish, serve, download, verify -> benchmark (smoke by default). Nothing to fetch."""
    from .demo import run_demo

    products = run_demo(out, pocus=pocus, benchmark=not no_benchmark, device=device, config=config_name,
                        echo=click.echo, progress=not quiet)
    click.echo("done:")
    for what, where in products.items():
        click.echo(f"  {what:10s} {where}")


# --- release: verify, stats, audit, card, diff ------------------------------

@main.command()
@click.argument("release", type=click.Path(path_type=Path))
@click.option("--manifest", default=None, metavar="MANIFEST",
              help="A published lock to compare this release with: a file (manifests/NAME-VERSION.json), a manifest "
                   "us4 ships by name (pocus-1.0.0), or a Hub revision ORG/NAME@REVISION (only its lock is fetched).")
@click.option("--endpoint", default=None, help="Hub or mirror URL for an ORG/NAME@REVISION manifest.")
@click.option("--deep", is_flag=True,
              help="Also decode every frame's PNG and hash its pixels (as the build did) against the lock; "
                   "--manifest always does.")
def verify(release: Path, manifest: str | None, endpoint: str | None, deep: bool) -> None:
    """Recompute every hash and count of RELEASE against its lock, compare every row of its
    tables with the lock's clips (and compare with a manifest, on pixels decoded here).

    Exit status 0 when every file and row matches (and the manifest is reproduced, alone or
    with added clips), 1 otherwise.
    """
    from .release.read import open_release
    from .release.verify import DIFFERS, reproduce, verify_release
    from .words import plural

    rel = open_release(release)
    reproduction = None
    if manifest is not None:
        result, reproduction = reproduce(rel, _lock_of(manifest, endpoint))
    else:
        result = verify_release(rel, deep=deep)
    for p in result.problems:
        click.echo(f"differs: {p}")
    for n in result.notes:
        click.echo(f"note: {n}")
    failed = bool(result.problems)
    if not failed:
        pixels = f"; the pixels of {plural(result.frames_decoded, 'frame')} decoded and re-hashed" \
            if result.frames_decoded else ""
        click.echo(f"ok: {plural(len(rel.lock.shards), 'shard')}, {plural(rel.lock.counts.frames, 'frame')} of "
                   f"{plural(rel.lock.counts.videos, 'video')} and {plural(result.checked, 'file')} match "
                   f"{release}/release.json, row by row{pixels}")
    if reproduction is not None:
        for line in reproduction.lines():
            click.echo(line)
        failed |= reproduction.verdict == DIFFERS
    if failed:
        sys.exit(1)


def _lock_of(ref: str, endpoint: str | None):
    """A lock named on the command line: folder, file, shipped manifest, or Hub revision."""
    from .hub.download import fetch_lock, split_ref
    from .release.read import locate_lock, read_lock_ref

    if locate_lock(ref) is not None:
        return read_lock_ref(ref)[0]
    repo_id, revision = split_ref(ref)
    return fetch_lock(repo_id, revision, endpoint=endpoint)


@main.command()
@click.argument("release", type=click.Path(path_type=Path))
def stats(release: Path) -> None:
    """Counts by source x split x label, every recipe source beside the paper's counts (0 where
    empty), and the spread of sizes, frame rates and frames per clip."""
    from .release.read import open_release
    from .release.stats import release_stats

    st = release_stats(open_release(release))
    click.echo(st.counts.to_string(index=False))
    click.echo("")
    click.echo(st.sources.to_string(index=False))
    click.echo("")
    click.echo(st.spread.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


@main.command()
@click.argument("release", type=click.Path(path_type=Path))
@click.option("--max-distance", default=6, show_default=True, type=click.IntRange(0, 64),
              help="Largest Hamming distance (of 64 bits) between frame hashes that makes a candidate pair.")
@click.option("--max-difference", default=4.0, show_default=True, type=click.FloatRange(0, 255),
              help="Largest mean grey-level difference of 64x64 thumbnails that confirms a near-duplicate.")
@click.option("--limit", default=20, show_default=True, help="Near-duplicate pairs to list.")
@click.option("--text", "text", is_flag=True, help="Also list each clip with burned-in text: boxes, text read, action.")
@click.option("--report", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --text: write a thumbnail per flagged clip (boxes drawn) and report.md into this folder.")
@click.option("--against", "other", type=click.Path(path_type=Path), default=None,
              help="Another release folder: list the frames of RELEASE identical to, or near-duplicates of, its "
                   "frames (by the same measure) instead of the checks within RELEASE.")
def audit(release: Path, max_distance: int, max_difference: float, limit: int, text: bool,
          report: Path | None, other: Path | None) -> None:
    """Prove that no clip is in two splits; warn where a split lacks a class or a class is spread
    wider than its largest group forces; list near-duplicate frames across splits.

    Exit status 1 when a clip is in two splits, or when near-duplicates cross splits in a
    release whose recipe groups them (splits.group: near_duplicates); the class warnings leave it 0.
    With --against OTHER: exit status 1 when any frame of RELEASE is identical to, or a
    near-duplicate of, a frame of OTHER.
    """
    from .release.audit import audit_release, balance_warnings, text_findings
    from .release.read import open_release
    from .words import plural

    rel = open_release(release)
    if other is not None:
        if text or report is not None:
            raise click.UsageError("--against compares two releases' frames; run --text without it")
        _audit_against(rel, open_release(other), max_distance, max_difference, limit)
        return
    result = audit_release(rel, max_distance, max_difference)
    for leak in result.leaks:
        click.echo(f"leak: {leak}")
    split_state = ("every clip is in exactly one split" if not result.leaks
                   else f"{plural(len(result.leaks), 'clip')} in more than one split")
    click.echo(f"{plural(result.videos, 'video')}, {plural(result.frames, 'frame')}: {split_state}")
    uneven = balance_warnings(rel.lock)
    for line in uneven:
        click.echo(f"warning: {line}")
    if not uneven:
        click.echo("every split holds every class, none spread wider than its largest group forces")
    click.echo(f"{plural(len(result.near_duplicates), 'near-duplicate frame pair')} across splits "
               f"(hash distance <= {max_distance} bits, confirmed on pixels: mean difference <= "
               f"{max_difference}; {plural(result.candidates, 'candidate pair')} checked)")
    for pair in result.near_duplicates[:limit]:
        click.echo(f"  bits={pair.distance:2d} diff={pair.difference:5.2f}  {pair.a[0]}#{pair.a[1]} [{pair.a[2]}]"
                   f"  ~  {pair.b[0]}#{pair.b[1]} [{pair.b[2]}]")
    if result.near_duplicates:
        click.echo("these clips share frames across splits, which makes an evaluation on them optimistic; "
                   + ("the recipe groups near-duplicates, so this release is faulty: rebuild it" if result.grouped
                      else "rebuild with splits: {group: near_duplicates} in the recipe to keep such clips together"))
    if text:
        findings = text_findings(rel, report)
        click.echo(f"{plural(len(findings), 'clip')} with burned-in text (found in the pixels by the build, or "
                   "declared by the file):")
        for f in findings:
            read = "; ".join(f.read) if f.read else ("(text read is kept only on the machine that built the release)"
                                                      if f.read is None else "(none read)")
            click.echo(f"  {f.video_id}: {f.action}, boxes {f.boxes}: {read}" + (f" [{f.thumbnail}]" if f.thumbnail else ""))
        if report is not None:
            lines = ["# Burned-in text found by the build or declared by the file", ""]
            lines += [f"- `{f.video_id}`: {f.action}, boxes {f.boxes}" + (f"\n\n  ![{f.video_id}]({f.thumbnail})"
                                                                        if f.thumbnail else "") for f in findings]
            report.mkdir(parents=True, exist_ok=True)
            (report / "report.md").write_text("\n".join(lines) + "\n")
            click.echo(f"report: {report / 'report.md'}")
    if not result.ok:
        sys.exit(1)


def _audit_against(rel, other, max_distance: int, max_difference: float, limit: int) -> None:
    """`us4 audit RELEASE --against OTHER`: the pairs found, then one summary line; exit 1 when any."""
    from .escape import one_line as esc
    from .release.audit import audit_against
    from .words import plural

    result = audit_against(rel, other, max_distance, max_difference, keep=limit)
    for pair in result.pairs:
        click.echo(f"  bits={pair.distance:2d} diff={pair.difference:5.2f}  {esc(pair.a[0])}#{pair.a[1]} "
                   f"[{esc(pair.a[2])}]  ~  {esc(pair.b[0])}#{pair.b[1]} [{esc(pair.b[2])}]")
    if result.found > len(result.pairs):
        click.echo(f"  ... and {result.found - len(result.pairs)} more (--limit)")
    click.echo(f"{esc(rel.name)} {esc(rel.version)} ({plural(result.frames[0], 'frame')} of "
               f"{plural(result.videos[0], 'video')}) against {esc(other.name)} {esc(other.version)} "
               f"({plural(result.frames[1], 'frame')} of {plural(result.videos[1], 'video')})")
    click.echo(f"{plural(result.found, 'near-duplicate frame pair')} across the releases ({result.identical} "
               f"identical): {result.compared:,} frame pairs compared by hash (distance <= {max_distance} bits), "
               f"{plural(result.candidates, 'candidate pair')} checked on pixels (mean difference <= {max_difference})"
               + (f"; {plural(result.blank, 'pair')} with a blank frame (one grey level) not counted: no image shared"
                  if result.blank else ""))
    if result.ok:
        return
    click.echo(f"{plural(result.shared_videos[0], 'video')} of {esc(rel.name)} "
               f"{'shares' if result.shared_videos[0] == 1 else 'share'} frames with "
               f"{plural(result.shared_videos[1], 'video')} of {esc(other.name)}: training on one and "
               "evaluating on the other is not leak-free")
    sys.exit(1)


@main.command()
@click.argument("old")
@click.argument("new")
@click.option("--endpoint", default=None,
              help="Hub or mirror URL for ORG/NAME@REVISION arguments [default: $HF_ENDPOINT, else the Hub].")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
def diff(old: str, new: str, endpoint: str | None, as_json: bool) -> None:
    """What changed from OLD to NEW: clips, frames, labels, splits, recipes.

    Each is a release folder, a lock or manifest file (or a manifest us4 ships, by name),
    or a Hub revision ORG/NAME@REVISION, of which only the lock is fetched.
    """
    import json

    from .release.diff import diff_locks
    from .release.read import locate_lock, read_lock_ref

    locks, labels = [], []
    for ref in (old, new):
        if locate_lock(ref) is not None:
            lock, rel = read_lock_ref(ref)
            labels.append(_v1_labels(rel) if rel is not None else {})
        else:
            lock = _lock_of(ref, endpoint)
            labels.append({})
        locks.append(lock)
    result = diff_locks(locks[0], locks[1], (labels[0], labels[1]))
    click.echo(json.dumps(result.to_dict(), indent=1) if as_json else "\n".join(result.lines()))


def _v1_labels(release) -> dict[str, str]:
    """Labels of a format-1 release (its lock records none), from its videos table."""
    if all(c.label is not None for c in release.lock.clips):
        return {}
    table = release.videos(["video_id", "label"])
    return dict(zip(table.column("video_id").to_pylist(), table.column("label").to_pylist()))


@main.command()
@click.argument("release", type=click.Path(path_type=Path))
@click.option("--benchmark", "record", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A benchmark.json written by `us4 benchmark`: attach it, and the card gets a Benchmark section.")
def card(release: Path, record: Path | None) -> None:
    """Draw the contact sheet of RELEASE and regenerate its README.md and croissant.json from its lock.

    Attaching a benchmark record changes no data: `us4 publish` then adds it to the
    published version as a commit of evidence (tag vVERSION+evidence.N).
    """
    from .release.attach import add_attachment
    from .release.contact_sheet import write_contact_sheet
    from .release.read import open_release

    rel = open_release(release)
    if record is not None:
        rel = add_attachment(rel, record, "benchmark.json")
    rel = add_attachment(rel, write_contact_sheet(rel))
    click.echo(f"wrote {rel.root / 'README.md'}, croissant.json and the contact sheet"
               + (", with the benchmark section" if record is not None else ""))


@main.command()
@click.argument("release", type=click.Path(path_type=Path))
@click.option("--raw", "raw", multiple=True, metavar="SOURCE=DIR",
              help="Folder of a source's raw clips, as given to build (repeat per source): cards show the original "
                   "frames, found by content hash; without it, the stored (cropped) frames.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Threads [default: the cores available].")
def review(release: Path, raw: tuple[str, ...], workers: int | None) -> None:
    """Write the curator's view of RELEASE: one local HTML page (counts per class and split,
    warnings, failures, near-duplicates, groups, a card per clip with its crop and text boxes
    drawn, filters and a search), into RELEASE.local/review/, beside the release, never in it.
    Its path is the last line printed."""
    from .release.read import open_release
    from .release.review import write_review
    from .words import plural

    with _stops_cleanly("no page was written (an earlier one is kept): run the same command again"):
        done = write_review(open_release(release), _parse_raw(raw), workers)
    click.echo(f"review: {plural(done.cards, 'clip card')} ({done.originals} with original frames), "
               f"{plural(done.failures, 'failure')}, {plural(done.near_duplicates, 'near-duplicate pair')} across "
               f"splits; written in {done.seconds:.1f} s")
    click.echo(str(done.page))


# --- hub: publish, download, mirror -----------------------------------------

_ENDPOINT_HELP = "Hub or mirror URL [default: $HF_ENDPOINT, else https://huggingface.co]."


@main.command()
@click.argument("release", type=click.Path(path_type=Path))
@click.option("--repo", "repo_id", required=True, metavar="ORG/NAME", help="Dataset repository to publish to.")
@click.option("--git", "git_root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the commit and tag into the local git repository DIR/datasets/ORG/NAME instead "
                   "(what `us4 mirror serve --root DIR` serves).")
@click.option("--endpoint", default=None, help=_ENDPOINT_HELP)
@click.option("--private", is_flag=True, help="Create the Hub repository private (if it does not exist yet).")
@click.option("--force", is_flag=True,
              help="Publish a phantom release under a name that does not say phantom, or the frames of a source "
                   "whose licence forbids derivatives (ND) when you hold the licensor's permission.")
@click.option("--lock-only", is_flag=True,
              help="Publish the lock, its recipe (recipe.yaml) and a card saying how to rebuild, and no data file: "
                   "others fetch the raw files and rebuild (for sources whose licence forbids derivatives).")
@click.option("--dry-run", is_flag=True, help="List the files, paths and tag a publish would send; send nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def publish(release: Path, repo_id: str, git_root: Path | None, endpoint: str | None, private: bool,
            force: bool, lock_only: bool, dry_run: bool, quiet: bool) -> None:
    """Publish RELEASE in one commit tagged v{version}; never moves an existing version tag.

    Evidence attached after publishing (`us4 card --benchmark`) goes out as a new commit whose
    data files are unchanged, tagged v{version}+evidence.N; v{version} keeps naming the data.
    Main never moves backwards: while it serves a newer version, the commit is reached by its tag alone.
    Frames derived from a source whose licence forbids derivatives (ND) are refused unless --force;
    --lock-only publishes the lock alone, tagged v{version}; a later publish of that version with its
    data files is tagged v{version}+data.N.
    The token comes from $HF_TOKEN or `hf auth login`, never from the command line.
    """
    from .hub.publish import check_licences, planned, publish_git, publish_hub
    from .release.read import open_release

    if git_root is not None and (endpoint or private):
        raise click.UsageError("--endpoint and --private apply to a Hub, not to a local --git repository")
    rel = open_release(release)
    if dry_run:  # refused, and noted, as the publish would be
        for note in check_licences(rel, force, lock_only):
            click.echo(f"note: {note}", err=True)
        with planned(rel, repo_id, lock_only) as plan:
            for path, local in plan.files:
                click.echo(f"{path}\t{local.stat().st_size}")
            click.echo(f"commit: {plan.title}\ntag: {plan.tag}")
        return
    with _stops_cleanly(f"publishing {repo_id} did not finish: run the same command again to finish it",
                        transfers=True):
        if git_root is not None:
            done = publish_git(rel, git_root, repo_id, quiet=quiet, force=force, lock_only=lock_only)
        else:
            done = publish_hub(rel, repo_id, endpoint=endpoint, private=private or None, quiet=quiet, force=force,
                               lock_only=lock_only)
    for note in done.notes:
        click.echo(f"note: {note}")
    state = ("published" if done.created else "already published (same content)") + (
        " (evidence: data unchanged)" if done.evidence else "") + (
        " (the lock, recipe and card alone: no data file)" if done.alone else "") + (
        f" (the data files of v{rel.version}, whose tag holds its lock alone)" if done.data else "")
    click.echo(f"{state}: {repo_id} {done.tag} = commit {done.commit[:12]} at {done.where}"
               + (f"; main still serves {done.main}, the newer version (this commit is on its tag alone)"
                  if done.main else ""))


@main.command()
@click.argument("repo_id", metavar="ORG/NAME")
@click.option("--revision", required=True, help="Tag (e.g. v1.0.0), branch or commit to fetch.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to create [default: ./NAME-REVISION].")
@click.option("--source", "sources", multiple=True, metavar="SOURCE",
              help="Fetch only this source's shards (repeat for several); verified against the full lock.")
@click.option("--split", "splits", multiple=True, metavar="SPLIT", help="Fetch only this split's shards (repeatable).")
@click.option("--endpoint", default=None, help=_ENDPOINT_HELP)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def download(repo_id: str, revision: str, out: Path | None, sources: tuple[str, ...], splits: tuple[str, ...],
             endpoint: str | None, quiet: bool) -> None:
    """Fetch one revision of a release (all of it, or some sources or splits) and verify every
    file against its lock. Only the files the lock names are fetched.

    Nothing unverified is left at --out; an interrupted download resumes when run again.
    """
    from .hub.download import default_out, download_release, staging_dir
    from .words import plural

    out = out or default_out(repo_id, revision)
    with _stops_cleanly(f"what was fetched is kept in {staging_dir(out)}: run the same command again to resume",
                        transfers=True):
        done = download_release(repo_id, revision, out, endpoint=endpoint, quiet=quiet, sources=sources or None,
                                splits=splits or None)
    for name in done.left_out:
        click.echo(f"left out: {name} (in the repository, not named by release.json)", err=True)
    part = f" ({', '.join([*sources, *splits])} only)" if done.partial else ""
    click.echo(f"verified: {repo_id}@{revision} (commit {done.commit[:12]}){part}: {plural(done.files, 'file')}, "
               f"{done.bytes / 2**20:.1f} MiB match release.json -> {done.path}")


@main.command()
@click.argument("source")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the files (created; empty, or an unfinished fetch to resume).")
@click.option("--from", "--endpoint", "remote", default=None, metavar="URL",
              help="Fetch from here, not from the pinned place: a git URL (https://, git://, file://, ssh://) or a "
                   "local repository for a git pin; a Hub endpoint (http(s)://HOST:PORT) for a Hub pin "
                   "[default for a Hub pin: $HF_ENDPOINT].")
@click.option("--revision", default=None, help="Another commit, tag or branch than the pinned commit.")
@click.option("--recipe", default=None, help="Recipe (name or file) whose pin to follow [default: the recipe us4 "
                                             "ships named SOURCE].")
@click.option("--manifest", default=None,
              help="Lock whose hashes check the files: a manifest's name, a lock file or a release folder "
                   "[default: the manifest us4 ships of the recipe's name and version].")
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
def fetch(source: str, out: Path, remote: str | None, revision: str | None, recipe: str | None,
          manifest: str | None, quiet: bool) -> None:
    """Fetch a public source's raw files exactly as its recipe pins them (a git commit, or a Hub
    dataset repository's commit), and check every file the manifest names against its sha256.

    A file that differs is named and not kept (exit status 1); files the manifest does not name
    are kept and reported as unverified. An interrupted fetch resumes when run again.
    """
    from .errors import VerificationError
    from .escape import one_line
    from .fetch import RECORD, STAGING, fetch_source
    from .words import plural

    with _stops_cleanly(f"what was fetched is kept in {out / STAGING}: run the same command again to resume",
                        transfers=True):
        done = fetch_source(source, out, recipe=recipe, manifest=manifest, remote=remote, revision=revision,
                            quiet=quiet)
    for kind, names in (("unverified", done.unverified), ("unverified, a Git LFS pointer", done.lfs_pointers),
                        ("unverified", done.unchecked), ("left out", done.left_out)):
        shown = names if len(names) <= 10 else names[:5] + [f"... and {len(names) - 5} more (listed in {out / RECORD})"]
        for name in shown:
            click.echo(f"{kind}: {one_line(name)}", err=True)
    if done.problems:
        raise VerificationError(f"{source}: commit {done.commit[:12]} of {done.remote} fails manifest {done.manifest} "
                                f"on {plural(len(done.problems), 'file')}, none kept; first: {done.problems[0]}",
                                done.problems)
    others = len(done.unverified) + len(done.lfs_pointers) + len(done.unchecked)
    click.echo(f"fetched {source}: commit {done.commit[:12]} of {done.remote}: {plural(len(done.verified), 'file')} "
               f"verified against manifest {done.manifest}, {others} unverified; {done.bytes / 2**20:.1f} MiB -> {out}")
    click.echo(f"build it: us4 build {recipe or source} --raw {source}={done.folder}")


@main.group()
def mirror() -> None:
    """Serve release repositories over the Hub's HTTP API, offline (olah)."""


@mirror.command("serve")
@click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of repositories laid out as ROOT/datasets/ORG/NAME (us4 publish --git ROOT).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port [default: a free one].")
def mirror_serve(root: Path, host: str, port: int | None) -> None:
    """Serve every release repository under --root until Ctrl-C."""
    from .hub.mirror import run_mirror

    run_mirror(root, host, port, click.echo)


# --- train: benchmark -------------------------------------------------------

@main.command()
@click.option("--pretrain", "pretrain_release", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="release to pretrain on (US-4, COVID-BLUES, or POCUS itself: fold 0 then holds the validation "
                   "videos); its frames are audited against --eval's first, as `us4 audit --against` does")
@click.option("--eval", "eval_release", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="POCUS release whose 5 video-level folds evaluate every initialisation")
@click.option("--config", "config_name", type=click.Choice(list(CONFIGS)), default="smoke",
              show_default=True,
              help="smoke: minutes on a CPU, bounded work per epoch; paper: the paper's setting, for a GPU; "
                   "tiny: seconds, to check that every stage runs (figures mean nothing)")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="folder for the results: created at the end, all at once; an earlier benchmark there is replaced")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="default: cuda when available")
@click.option("--seed", type=int, default=None, help="overrides the config's seed")
@click.option("--label-fraction", type=float, default=None,
              help="fraction of pretraining videos whose label (of the pretrain release's classes) feeds the "
                   "semi-supervised term; 0: none, the loss is NT-Xent alone")
@click.option("--imagenet", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="torchvision-layout ResNet-18 ImageNet weights, evaluated as one more initialisation")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="ranks on this machine: >1 runs data-parallel, exactly as "
                   "`torchrun --standalone --nproc-per-node N -m us4.cli benchmark ...`")
@click.option("--frame-cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="folder of the decoded frames, written once per release and input size and mapped by later runs "
                   "and by every rank of this machine [default: $US4_FRAME_CACHE, else $XDG_CACHE_HOME/us4/frames, "
                   "else ~/.cache/us4/frames]")
@click.option("--quiet", "-q", is_flag=True, help="no progress lines (failures are still printed)")
@click.pass_context
def benchmark(ctx: click.Context, pretrain_release: Path, eval_release: Path, config_name: str, out: Path,
              device: str | None, seed: int | None, label_fraction: float | None, imagenet: Path | None,
              nproc: int, frame_cache: Path | None, quiet: bool) -> None:
    """Pretrain USCL (and a no-SPG baseline) on a release, fine-tune on POCUS folds; write OUT/benchmark.json,
    benchmark.md and plots. First, the pretrain release's frames are audited against the evaluation
    release's (identical or near-duplicate frames): the record says whether they are disjoint.
    Under torchrun, every rank runs this command (rank 0 reports)."""
    if nproc > 1:
        from .train.distributed import launch

        # `is`, not `in`: 0 == False, and --label-fraction 0 or --seed 0 must reach the ranks
        given = {p.name: v for p in ctx.command.params if p.name != "nproc"
                 and (v := ctx.params[p.name]) is not None and v is not False}
        passed = [arg for p in ctx.command.params if p.name in given
                  for arg in ([p.opts[0]] if p.is_flag else [p.opts[0], str(given[p.name])])]
        launch(nproc, ["benchmark", *passed])
        return
    from .train.benchmark import run_benchmark
    from .contract.benchmark_card import benchmark_markdown

    record = run_benchmark(pretrain_release, eval_release, config_name, out, device=device, seed=seed,
                           label_fraction=label_fraction, imagenet=imagenet, frame_cache=frame_cache,
                           progress=None if quiet else (lambda msg: click.echo(msg, err=True)))
    if record is not None:  # rank 0, or the only process
        click.echo(benchmark_markdown(record))
        click.echo(f"wrote {out / 'benchmark.json'}, {out / 'benchmark.md'} and plots")


if __name__ == "__main__":
    main()
