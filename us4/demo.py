"""`us4 demo`: the main job on the embedded default, end to end.

Phantom clips for the four US-4 sources -> a release built with pipelines/us4.yaml ->
verified and audited -> published into a local git repository -> served over the Hub
API by the mirror on a free loopback port -> downloaded back and verified -> the smoke
benchmark (pretraining on the phantom release, evaluation on a phantom POCUS-like
release, or on a real POCUS folder when one is given).
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .builder import build_release
from .errors import VerificationError
from .phantom.corpus import make_pocus_corpus, make_us4_corpus
from .recipe import find_recipe
from .release.audit import audit_release
from .release.read import open_release
from .release.verify import verify_release
from .words import plural


def run_demo(out: Path, *, pocus: Path | None = None, benchmark: bool = True, device: str | None = None,
             config: str = "smoke", echo: Callable[[str], None] = print, progress: bool = True) -> dict[str, Path]:
    """Run every stage into `out`; return where each product is."""
    from .hub.download import download_release
    from .hub.mirror import serve_mirror
    from .hub.publish import publish_git

    out = Path(out)
    echo(f"[1/5] phantom clips for the four US-4 sources -> {out / 'raw'}")
    raw = make_us4_corpus(out / "raw" / "us4", clips_per_class=2)
    echo("[2/5] build with pipelines/us4.yaml")
    release_dir = out / "releases" / "us4-phantom"
    summary = build_release(find_recipe("us4"), raw, release_dir, progress=progress)
    release = open_release(release_dir)
    problems = verify_release(release).problems
    if problems:
        raise VerificationError(f"{release_dir}: fresh build does not verify", problems)
    audit = audit_release(release)
    echo(f"      {summary.name} {summary.version}: {summary.videos} videos, {summary.frames} frames, "
         f"{len(summary.failures)} failed; "
         f"verify ok; audit: {'no clip in two splits' if audit.ok else audit.leaks}, "
         f"{len(audit.near_duplicates)} near-duplicate frame pairs across splits")

    echo("[3/5] publish into a local git repository, serve it over the Hub API, download it back")
    mirror_root = out / "mirror"
    repo_id = "us4-demo/us4-phantom"
    published = publish_git(release, mirror_root, repo_id, quiet=not progress)
    fetched = out / "downloaded" / f"us4-phantom-{published.tag}"
    shutil.rmtree(fetched, ignore_errors=True)  # a rerun of the demo fetches again
    with serve_mirror(mirror_root) as endpoint:
        echo(f"      mirror serving at {endpoint}")
        got = download_release(repo_id, published.tag, fetched, endpoint=endpoint, quiet=not progress)
    echo(f"      downloaded {repo_id}@{published.tag} ({plural(got.files, 'file')}, {got.bytes / 2**20:.1f} MiB), "
         f"verified against its lock; server stopped")
    products = {"release": release_dir, "mirror": mirror_root, "download": fetched}
    if not benchmark:
        return products

    if pocus is None:
        echo("[4/5] phantom POCUS-like clips, built with pipelines/pocus.yaml")
        pocus = make_pocus_corpus(out / "raw" / "pocus")
    else:
        echo(f"[4/5] POCUS clips from {pocus}, built with pipelines/pocus.yaml")
    eval_dir = out / "releases" / "pocus"
    build_release(find_recipe("pocus"), {"pocus": pocus}, eval_dir, progress=progress)
    products["eval"] = eval_dir
    echo(f"[5/5] {config} benchmark: USCL vs contrastive without SPG vs random init, 5 folds")
    products["benchmark"] = _benchmark(release_dir, eval_dir, out / "benchmark", config, device, echo, progress)
    return products


def _benchmark(release_dir: Path, eval_dir: Path, out: Path, config: str, device: str | None,
               echo: Callable[[str], None], progress: bool) -> Path:
    """The benchmark, attached to the pretraining release so that its card shows it."""
    from .release.attach import add_attachment
    from .train.benchmark import run_benchmark
    from .contract.benchmark_card import benchmark_markdown

    record = run_benchmark(release_dir, eval_dir, config, out, device=device,
                           progress=(lambda msg: echo(f"      {msg}")) if progress else None)
    echo(benchmark_markdown(record))
    add_attachment(open_release(release_dir), out / "benchmark.json", "benchmark.json")
    echo(f"      benchmark attached to {release_dir} (its card now has a Benchmark section)")
    return out
