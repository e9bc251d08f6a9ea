"""`us4 build`: plan, ingest in parallel (resumable), write shards, lock, card; install atomically."""
from __future__ import annotations

import multiprocessing
import os
import shutil
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from ..errors import BuildError, RawFolderError, ReleaseError
from ..system import available_cores
from ..recipe import Recipe, load_recipe
from ..release.attach import add_attachment
from ..release.card import write_contact_sheet
from ..release.read import LOCK_NAME, Release
from .cache import ClipCache
from .failure import Failure
from .ingest import ingest_in_worker
from .lock import make_lock
from .plan import ClipJob, make_plan
from .splits import assign_splits
from .writer import write_shards

WORK_DIR = ".us4-work"


@dataclass
class BuildSummary:
    out: Path
    videos: int
    frames: int
    duplicates_dropped: int
    ingested: int  # clips decoded in this run
    reused: int  # clips taken from the resume cache
    failures: list[Failure] = field(default_factory=list)
    excluded: int = 0
    sheet_missing: list[str] = field(default_factory=list)
    label_overrides: list[dict] = field(default_factory=list)


def build_release(
    recipe: Recipe | str | Path,
    raw: dict[str, str | Path],
    out: str | Path,
    *,
    workers: int | None = None,
    retry_failed: bool = False,
    progress: bool = True,
) -> BuildSummary:
    """Build (or resume building) a release of `recipe` from the `raw` clip folders into `out`."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out = Path(out)
    plan = make_plan(recipe, {k: Path(v) for k, v in raw.items()})
    if not plan.jobs and not plan.failures:  # before anything is written
        raise RawFolderError(f"no video clips found in {', '.join(f'--raw {k}={v}' for k, v in sorted(raw.items()))}"
                             + (f" ({len(plan.excluded)} files excluded by the recipe)" if plan.excluded else ""))
    _check_out(out)
    cache = ClipCache(out / WORK_DIR)
    cache.remove_partial_writes()
    splits = assign_splits(plan.jobs, recipe)

    todo: list[ClipJob] = []
    for job in plan.jobs:
        if cache.has_result(job.key):
            continue
        if cache.failure(job.key) is not None:
            if not retry_failed:
                continue
            cache.forget_failure(job.key)
        todo.append(job)
    _ingest_all(todo, cache, workers or available_cores(), progress)

    failures = list(plan.failures)
    good = []
    for job in plan.jobs:
        failure = cache.failure(job.key)
        if failure is not None:
            failures.append(failure)
        elif cache.has_result(job.key):
            good.append(job)
    if not good:
        raise ReleaseError(f"{out}: no clip could be used ({len(failures)} failed, "
                           f"{len(plan.excluded)} excluded by the recipe); nothing to release")

    staging = cache.root / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tqdm(total=len(good), desc="write shards", unit="clip", disable=not progress) as bar:
        written = write_shards(good, splits, cache, staging, recipe.shard_max_bytes, bar.update)
    staged = Release(staging, make_lock(recipe, plan, failures, written))
    add_attachment(staged, write_contact_sheet(staged))  # writes the lock and renders the card
    _install(staging, out)
    if not failures:
        shutil.rmtree(cache.root, ignore_errors=True)
    return BuildSummary(
        out=out, videos=written.videos, frames=written.frames,
        duplicates_dropped=written.duplicates_dropped, ingested=len(todo),
        reused=len(plan.jobs) - len(todo), failures=failures, excluded=len(plan.excluded),
        sheet_missing=plan.sheet_missing, label_overrides=plan.label_overrides,
    )


def _check_out(out: Path) -> None:
    """Refuse to write into a folder that holds something other than a us4 release."""
    if out.exists() and not out.is_dir():
        raise ReleaseError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not ((out / LOCK_NAME).is_file() or (out / WORK_DIR).is_dir()):
            raise ReleaseError(f"--out {out}: folder is not empty and holds no us4 release; "
                               "choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)


def _install(staging: Path, out: Path) -> None:
    """Swap the staged release into place. The lock goes first out and last in, so a
    folder with a lock is always a complete release; an interruption in between
    leaves no lock, and the next run installs again from the cache."""
    (out / LOCK_NAME).unlink(missing_ok=True)
    for entry in sorted(staging.iterdir()):
        if entry.name == LOCK_NAME:
            continue
        old = out / entry.name
        if old.is_dir():
            shutil.rmtree(old)
        os.replace(entry, old)
    os.replace(staging / LOCK_NAME, out / LOCK_NAME)
    shutil.rmtree(staging, ignore_errors=True)


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts workers with the modules already imported (spawn costs each worker
    # about 0.5 s of imports); no thread runs in this process when the pool forks.
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _ingest_all(jobs: list[ClipJob], cache: ClipCache, workers: int, progress: bool) -> None:
    if not jobs:
        return
    jobs = sorted(jobs, key=lambda j: -j.size)  # longest first: fewer idle workers at the end
    if workers <= 1:
        for job in tqdm(jobs, desc="ingest", unit="clip", disable=not progress):
            ingest_in_worker(job, str(cache.root))
        return
    # pyarrow imports pandas on its first array (~0.2 s): once here, inherited by the
    # forked workers, instead of once in every worker and again in this process.
    pa.array([0])
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=_pool_context()) as pool:
        # submitting starts the workers: before the progress bar starts its monitor thread
        pending: set[Future] = {pool.submit(ingest_in_worker, job, str(cache.root)) for job in jobs}
        with tqdm(total=len(jobs), desc="ingest", unit="clip", disable=not progress) as bar:
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        fut.result()
                        bar.update()
            except BrokenProcessPool:
                raise BuildError("a worker process died (crashed or ran out of memory); the clips it "
                                 "finished are kept: run again to resume, with --workers 1 to find the clip") from None
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
