"""What verification costs on a download, measured against the plain client in one run.

    python benchmarks/hub.py [POCUS_DATA_DIR] [--release DIR] [--repeats N]

Builds the POCUS sample with pipelines/pocus.yaml (or takes --release), publishes it
into a local git repository, serves it with `us4 mirror serve`'s server (olah, offline,
127.0.0.1), then times, turn about and each into a fresh folder:
- `us4 download`'s work (`download_release`: pin the revision, fetch, verify every file
  against the lock, move into place);
- a plain `huggingface_hub.snapshot_download` of the same revision from the same server.
Prints both medians, the verification alone, and the ratio (target: 1.2 or lower).
One warm-up fetch first, so that neither side pays for the server's first reads.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "pipelines" / "pocus.yaml"
DEFAULT_POCUS = REPO.parent / "shared" / "pocus" / "data"
TARGET = 1.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pocus", nargs="?", type=Path, default=DEFAULT_POCUS, help="POCUS data/ folder")
    parser.add_argument("--release", type=Path, help="an existing release folder (skips the build)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars

    from us4.builder import build_release
    from us4.contract.lock import read_lock
    from us4.paths import inside
    from us4.hub.download import download_release
    from us4.hub.mirror import serve_mirror
    from us4.hub.publish import publish_git, publish_plan
    from us4.release.read import open_release
    from us4.release.verify import verify_release

    disable_progress_bars()
    work = Path(tempfile.mkdtemp(prefix="us4-bench-hub-"))
    try:
        release_dir = args.release
        if release_dir is None:
            if not (args.pocus / "pocus_videos").is_dir():
                sys.exit(f"no POCUS data at {args.pocus} (give its data/ folder, or --release DIR)")
            release_dir = work / "release"
            print(f"building {release_dir} from {args.pocus} ...", flush=True)
            build_release(RECIPE, {"pocus": args.pocus}, release_dir, progress=False)
        release = open_release(release_dir)
        repo = f"bench/{release.name}"
        tag = publish_git(release, work / "mirror", repo, quiet=True).tag
        size = sum(local.stat().st_size for _, local in publish_plan(release, repo).files)  # what is served

        with serve_mirror(work / "mirror") as endpoint:
            def plain(dest: Path) -> None:
                snapshot_download(repo, repo_type="dataset", revision=tag, local_dir=dest, endpoint=endpoint)

            def ours(dest: Path) -> None:
                download_release(repo, tag, dest, endpoint=endpoint, quiet=True)

            plain(work / "warmup")
            times: dict[str, list[float]] = {"plain": [], "us4": [], "verify": [], "contract": []}
            for i in range(args.repeats):
                # alternate which goes first, so that neither always runs on a warmer server
                order = (("plain", plain), ("us4", ours)) if i % 2 == 0 else (("us4", ours), ("plain", plain))
                for name, fetch in order:
                    dest = work / f"{name}-{i}"
                    t = time.perf_counter()
                    fetch(dest)
                    times[name].append(time.perf_counter() - t)
                t = time.perf_counter()
                assert verify_release(open_release(work / f"us4-{i}")).ok
                times["verify"].append(time.perf_counter() - t)
                t = time.perf_counter()
                lock = read_lock((work / f"us4-{i}" / "release.json").read_bytes())
                for name in lock.files():
                    inside(work / f"us4-{i}", name)
                times["contract"].append(time.perf_counter() - t)
                for name in ("plain", "us4"):
                    shutil.rmtree(work / f"{name}-{i}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["us4"] / med["plain"]
    print(f"release {release.name} {release.version}: {size / 2**20:.1f} MiB, {len(release.lock.shards)} shards; "
          f"{args.repeats} runs each, medians")
    print(f"  snapshot_download (plain client)      {med['plain']:7.2f} s   runs: "
          + " ".join(f"{t:.2f}" for t in times["plain"]))
    print(f"  us4 download (fetch + verify + move)  {med['us4']:7.2f} s   runs: "
          + " ".join(f"{t:.2f}" for t in times["us4"]))
    print(f"  verification alone                    {med['verify']:7.2f} s")
    # the download validates the lock and checks its paths twice (before the fetch and in the verification)
    share = 2 * med["contract"] / med["us4"]
    print(f"  typed lock + path checks              {2 * med['contract'] * 1000:7.1f} ms = {100 * share:.2f} % of the "
          "download (target < 2 %)")
    print(f"ratio us4 download / snapshot_download: {ratio:.2f} (target {TARGET} or lower: "
          f"{'met' if ratio <= TARGET else 'NOT met'})")


if __name__ == "__main__":
    main()
