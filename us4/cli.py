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

def _video_paths(paths: tuple[str, ...]) -> list[Path]:
    """Files as given; folders walked recursively in sorted order for video files, hidden ones skipped."""
    from .media import VIDEO_SUFFIXES

    out: list[Path] = []
    for arg in paths:
        p = Path(arg)
        if not p.is_dir():
            out.append(p)
            continue
        found = [f for f in p.rglob("*")
                 if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES
                 and not any(part.startswith(".") for part in f.relative_to(p).parts)]
        out.extend(sorted(found, key=lambda f: f.relative_to(p).as_posix()))
    return out


@main.command("probe")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
def probe_cmd(paths: tuple[str, ...]) -> None:
    """Describe video clips: container, codec, fps, frames, duration, size, rotation.

    PATHS are clip files or folders (searched recursively for video files; hidden
    files skipped). A clip that cannot be read gets its reason in the `problem`
    column; the exit status is then 1, after every row is printed.
    """
    from .media import MediaError
    from .media import probe as probe_clip

    rows = [("path", "container", "codec", "fps", "frames", "duration", "size", "rotation", "problem")]
    failed = 0
    for path in _video_paths(paths):
        try:
            i = probe_clip(path)
        except MediaError as exc:
            failed += 1
            rows.append((str(path), "-", "-", "-", "-", "-", "-", "-", exc.reason))
            continue
        rows.append((str(path), i.container, i.codec, f"{i.fps:.3f}".rstrip("0").rstrip("."),
                     str(i.n_frames), f"{i.duration:.2f}s", f"{i.width}x{i.height}", str(i.rotation), ""))
    if len(rows) == 1:
        click.echo("no video files found", err=True)
        sys.exit(1)
    _table(rows)
    if failed:
        click.echo(f"{failed} of {len(rows) - 1} clips could not be read", err=True)
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
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--raw", "raw", multiple=True, required=True, metavar="SOURCE=DIR",
              help="Folder of a source's raw clips (repeat per source). POCUS: the dataset's data/ folder.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Release folder to create, or to resume building into.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Decoding processes [default: all cores].")
@click.option("--retry-failed", is_flag=True, help="Ingest again the clips that failed in an earlier run.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or notes; failures and errors only.")
def build(recipe: Path, raw: tuple[str, ...], out: Path, workers: int | None, retry_failed: bool,
          quiet: bool) -> None:
    """Build a release from raw clips as RECIPE says (resumes an interrupted build).

    Exit status: 0 built, 3 built but some clips failed (see the failure ledger in
    release.json), 1 error, 130 interrupted (run the same command again to resume).
    """
    from .build import build_release

    try:
        summary = build_release(recipe, _parse_raw(raw), out, workers=workers,
                                retry_failed=retry_failed, progress=not quiet)
    except KeyboardInterrupt:
        click.echo(f"us4: interrupted; finished clips are kept in {out}/.us4-work: run the same command "
                   "again to resume", err=True)
        sys.exit(130)
    if not quiet:
        for line in summary.sheet_missing:
            click.echo(f"note: metadata sheet row without its file: {line}", err=True)
        for o in summary.label_overrides:
            click.echo(f"note: {o['source']}/{o['path']}: file name says {o['file_name']}, "
                       f"metadata sheet says {o['sheet']}; using the sheet", err=True)
    for failure in summary.failures:
        click.echo(f"failed: {failure.line()}", err=True)
    click.echo(
        f"built {summary.out}: {summary.videos} videos, {summary.frames} frames "
        f"({summary.duplicates_dropped} near-duplicates dropped); {len(summary.failures)} clips failed, "
        f"{summary.excluded} files excluded by the recipe, {len(summary.sheet_missing)} sheet rows without a file; "
        f"{summary.ingested} clips ingested, {summary.reused} reused from an earlier run")
    if summary.failures:
        sys.exit(3)


@main.command()
@click.option("--out", default=Path("us4-demo"), show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the phantom clips, the releases, the mirror and the benchmark.")
@click.option("--pocus", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="Evaluate on a real POCUS data/ folder instead of phantom POCUS-like clips.")
@click.option("--no-benchmark", is_flag=True, help="Stop after the hub round trip.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="default: cuda when available")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def demo(out: Path, pocus: Path | None, no_benchmark: bool, device: str | None, quiet: bool) -> None:
    """The main job on the embedded default: phantom clips -> release -> verify, audit ->
    publish, serve, download, verify -> smoke benchmark. Nothing to fetch."""
    from .demo import run_demo

    products = run_demo(out, pocus=pocus, benchmark=not no_benchmark, device=device,
                        echo=click.echo, progress=not quiet)
    click.echo("done:")
    for what, where in products.items():
        click.echo(f"  {what:10s} {where}")


# --- release: verify, stats, audit, card, diff ------------------------------

@main.command()
@click.argument("release", type=click.Path(path_type=Path))
@click.option("--manifest", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A published lock (manifests/NAME-VERSION.json) to compare this release with.")
def verify(release: Path, manifest: Path | None) -> None:
    """Recompute every hash and count of RELEASE against its lock (and a manifest)."""
    import json

    from .release.read import open_release
    from .release.verify import compare_to_manifest, verify_release

    rel = open_release(release)
    problems = verify_release(rel)
    for p in problems:
        click.echo(f"differs: {p}")
    if manifest is not None:
        differences = compare_to_manifest(rel.lock, json.loads(manifest.read_text()))
        for d in differences:
            click.echo(f"not reproduced: {d}")
        if not differences:
            click.echo(f"reproduced: byte-identical to {manifest.name}")
        problems = problems + differences
    if problems:
        sys.exit(1)
    click.echo(f"ok: {len(rel.lock['shards'])} shards, {rel.lock['counts']['frames']} frames of "
               f"{rel.lock['counts']['videos']} videos match {release}/release.json")


@main.command()
@click.argument("release", type=click.Path(path_type=Path))
def stats(release: Path) -> None:
    """Counts by source x split x label, per source beside the paper's counts, and the
    spread of sizes, frame rates and frames per clip."""
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
def audit(release: Path, max_distance: int, max_difference: float, limit: int) -> None:
    """Prove that no clip is in two splits; list near-duplicate frames across splits."""
    from .release.audit import audit_release
    from .release.read import open_release

    result = audit_release(open_release(release), max_distance, max_difference)
    for leak in result.leaks:
        click.echo(f"leak: {leak}")
    click.echo(f"{result.videos} videos, {result.frames} frames: "
               f"{'every clip is in exactly one split' if result.ok else f'{len(result.leaks)} clips in more than one split'}")
    click.echo(f"{len(result.near_duplicates)} near-duplicate frame pairs across splits "
               f"(hash distance <= {max_distance} bits, confirmed on pixels: mean difference <= "
               f"{max_difference}; {result.candidates} candidate pairs checked)")
    for pair in result.near_duplicates[:limit]:
        click.echo(f"  bits={pair.distance:2d} diff={pair.difference:5.2f}  {pair.a[0]}#{pair.a[1]} [{pair.a[2]}]"
                   f"  ~  {pair.b[0]}#{pair.b[1]} [{pair.b[2]}]")
    if not result.ok:
        sys.exit(1)


@main.command()
@click.argument("old")
@click.argument("new")
@click.option("--endpoint", default=None,
              help="Hub or mirror URL for ORG/NAME@REVISION arguments [default: $HF_ENDPOINT, else the Hub].")
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
def diff(old: str, new: str, endpoint: str | None, as_json: bool) -> None:
    """What changed from OLD to NEW: clips, frames, labels, splits, recipes.

    Each is a release folder or a Hub revision written ORG/NAME@REVISION (downloaded and
    verified into the cache first).
    """
    import json

    from .hub.download import resolve_release
    from .release.diff import diff_releases
    from .release.read import open_release

    a, b = (open_release(resolve_release(x, endpoint=endpoint, quiet=True).path) for x in (old, new))
    result = diff_releases(a, b)
    click.echo(json.dumps(result.to_dict(), indent=1) if as_json else "\n".join(result.lines()))


@main.command()
@click.argument("release", type=click.Path(path_type=Path))
@click.option("--benchmark", "record", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A benchmark.json written by `us4 benchmark`: attach it, and the card gets a Benchmark section.")
def card(release: Path, record: Path | None) -> None:
    """Draw the contact sheet of RELEASE and regenerate its README.md from its lock."""
    from .release.attach import add_attachment
    from .release.card import write_contact_sheet
    from .release.read import open_release

    rel = open_release(release)
    if record is not None:
        rel = add_attachment(rel, record, "benchmark.json")
    rel = add_attachment(rel, write_contact_sheet(rel))
    click.echo(f"wrote {rel.root / 'README.md'} and its contact sheet"
               + (", with the benchmark section" if record is not None else ""))


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
@click.option("--dry-run", is_flag=True, help="List the files, paths and tag a publish would send; send nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def publish(release: Path, repo_id: str, git_root: Path | None, endpoint: str | None, private: bool,
            dry_run: bool, quiet: bool) -> None:
    """Publish RELEASE in one commit tagged v{version}; never moves an existing version tag.

    The token comes from $HF_TOKEN or `hf auth login`, never from the command line.
    """
    from .hub.publish import publish_git, publish_hub, publish_plan
    from .release.read import open_release

    if git_root is not None and (endpoint or private):
        raise click.UsageError("--endpoint and --private apply to a Hub, not to a local --git repository")
    rel = open_release(release)
    if dry_run:
        plan = publish_plan(rel, repo_id)
        for path, local in plan.files:
            click.echo(f"{path}\t{local.stat().st_size}")
        click.echo(f"commit: {plan.title}\ntag: {plan.tag}")
        return
    if git_root is not None:
        done = publish_git(rel, git_root, repo_id, quiet=quiet)
    else:
        done = publish_hub(rel, repo_id, endpoint=endpoint, private=private or None, quiet=quiet)
    state = "published" if done.created else "already published (same content)"
    click.echo(f"{state}: {repo_id} {done.tag} = commit {done.commit[:12]} at {done.where}")


@main.command()
@click.argument("repo_id", metavar="ORG/NAME")
@click.option("--revision", required=True, help="Tag (e.g. v1.0.0), branch or commit to fetch.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to create [default: ./NAME-REVISION].")
@click.option("--endpoint", default=None, help=_ENDPOINT_HELP)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def download(repo_id: str, revision: str, out: Path | None, endpoint: str | None, quiet: bool) -> None:
    """Fetch one revision of a release and verify every file against its lock.

    Nothing unverified is left at --out; an interrupted download resumes when run again.
    """
    from .hub.download import default_out, download_release, staging_dir

    out = out or default_out(repo_id, revision)
    try:
        done = download_release(repo_id, revision, out, endpoint=endpoint, quiet=quiet)
    except KeyboardInterrupt:
        click.echo(f"us4: interrupted; what was fetched is kept in {staging_dir(out)}: run the same "
                   "command again to resume", err=True)
        sys.exit(130)
    click.echo(f"verified: {repo_id}@{revision} (commit {done.commit[:12]}): {done.files} files, "
               f"{done.bytes / 2**20:.1f} MiB match release.json -> {done.path}")


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
              help="release to pretrain on (US-4, or POCUS: fold 0 then holds the validation videos)")
@click.option("--eval", "eval_release", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="POCUS release whose 5 video-level folds evaluate every initialisation")
@click.option("--config", "config_name", type=click.Choice(["smoke", "paper", "tiny"]), default="smoke",
              show_default=True,
              help="smoke: minutes on a CPU, bounded work per epoch; paper: the paper's setting, for a GPU; "
                   "tiny: seconds, to check that every stage runs (figures mean nothing)")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="folder for the results: created at the end, all at once; an earlier benchmark there is replaced")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="default: cuda when available")
@click.option("--seed", type=int, default=None, help="overrides the config's seed")
@click.option("--label-fraction", type=float, default=None,
              help="fraction of pretraining videos whose label feeds the semi-supervised term")
@click.option("--imagenet", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="torchvision-layout ResNet-18 ImageNet weights, evaluated as one more initialisation")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="ranks on this machine: >1 runs data-parallel, exactly as "
                   "`torchrun --standalone --nproc-per-node N $(command -v us4) benchmark ...`")
@click.option("--quiet", "-q", is_flag=True, help="no progress lines (failures are still printed)")
@click.pass_context
def benchmark(ctx: click.Context, pretrain_release: Path, eval_release: Path, config_name: str, out: Path,
              device: str | None, seed: int | None, label_fraction: float | None, imagenet: Path | None,
              nproc: int, quiet: bool) -> None:
    """Pretrain USCL (and a no-SPG baseline) on a release, fine-tune on POCUS folds; write OUT/benchmark.json,
    benchmark.md and plots. Under torchrun, every rank runs this command (rank 0 reports)."""
    if nproc > 1:
        from .train.distributed import launch

        passed = [arg for p in ctx.command.params if p.name != "nproc" and ctx.params[p.name] not in (None, False)
                  for arg in ([p.opts[0]] if p.is_flag else [p.opts[0], str(ctx.params[p.name])])]
        launch(nproc, ["benchmark", *passed])
        return
    from .train.benchmark import run_benchmark
    from .train.card_section import benchmark_markdown

    record = run_benchmark(pretrain_release, eval_release, config_name, out, device=device, seed=seed,
                           label_fraction=label_fraction, imagenet=imagenet,
                           progress=None if quiet else (lambda msg: click.echo(msg, err=True)))
    if record is not None:  # rank 0, or the only process
        click.echo(benchmark_markdown(record))
        click.echo(f"wrote {out / 'benchmark.json'}, {out / 'benchmark.md'} and plots")


if __name__ == "__main__":
    main()
