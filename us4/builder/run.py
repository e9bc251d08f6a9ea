"""`us4 build`: plan, ingest in parallel (resumable), group and split, write shards, lock,
card; install atomically. One build at a time per output folder."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..contract.layout import LOCAL_IDS, LOCAL_TEXT, WORK_DIR, local_dir
from ..contract.lock import LOCK_NAME, BuildWarning, Failure, WarningKind
from ..errors import BuildError, CacheError, RawFolderError, ReleaseError
from ..escape import csv_cell
from ..files import atomic_write, private_dir, storage_errors
from ..paths import inside, safe_relpath
from ..recipe import Recipe, load_recipe
from ..release.attach import add_attachment, seal
from ..release.contact_sheet import write_contact_sheet
from ..release.read import open_release
from ..release.verify import files_here
from ..system import available_cores
from .cache import STAGING, ClipCache, ClipFacts, remove_partial_writes
from .executor import DaskExecutor, Executor, LocalExecutor
from .groups import column_links, content_links, near_duplicate_links
from .ingest import ingest_in_worker
from .lock import make_lock
from .mutex import BuildMutex
from .plan import ClipJob, Plan, checks_text, make_plan
from .previous import read_previous, removed_clips
from .splits import assign_splits
from .version import Shipped, local_version, with_version
from .writer import ShardResult, plan_shards, write_shard
from ..words import plural

#: in the local files: the whole reason of each ledger entry whose published reason leaves a value out
LOCAL_WITHHELD = "withheld.csv"

# A monitor thread in this process while the pool forks could leave a lock held in the workers.
tqdm.monitor_interval = 0

#: in the work folder: every file an install in progress may touch (the next run's proof they are ours)
INSTALL_RECORD = "install.json"


@dataclass
class BuildSummary:
    out: Path
    name: str
    version: str
    phantom: bool
    videos: int
    frames: int
    duplicates_dropped: int
    ingested: int  # clips decoded in this run
    reused: int  # clips taken from the resume cache
    failures: list[Failure] = field(default_factory=list)
    excluded: int = 0
    warnings: list[BuildWarning] = field(default_factory=list)
    sheet_missing: list[str] = field(default_factory=list)
    sheet_missing_unshipped: int = 0  # of those, rows naming clips the public repository does not ship
    label_overrides: int = 0
    groups: int = 0  # groups of two or more clips kept in one split
    per_source: dict[str, int] = field(default_factory=dict)  # videos per recipe source, 0 where empty
    local: Path | None = None  # the never-published local files, when written
    previous_removed: list[str] = field(default_factory=list)  # clips of the --previous release that are gone
    shipped: Shipped | None = None  # the shipped release it is named like and whose clips it does not hold


@storage_errors()  # a full disk, a read-only --out: one line naming the path; the cache keeps the work
def build_release(
    recipe: Recipe | str | Path,
    raw: dict[str, str | Path],
    out: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    retry_failed: bool = False,
    allow_empty: tuple[str, ...] = (),
    previous: str | Path | None = None,
    version: str | None = None,
    progress: bool = True,
) -> BuildSummary:
    """Build (or resume building) a release of `recipe` from the `raw` clip folders into `out`.

    The per-clip and per-shard work runs in `workers` local processes (default: one per
    core), or on the Dask cluster at `scheduler` (`tcp://HOST:PORT`, or `local`).
    `previous` (a release folder or a lock) keeps the split of every clip it holds; the
    recipe's `splits.inherit` says the same. `allow_empty` names sources that may end with
    no usable clip. `version` replaces the recipe's; see `version.py` for the local suffix.
    """
    recipe_path = None if isinstance(recipe, Recipe) else Path(recipe)
    recipe = with_version(recipe if isinstance(recipe, Recipe) else load_recipe(recipe), version)
    out = Path(out).absolute()  # `--out .` must name the folder (the local files go beside it)
    for name in allow_empty:
        if name not in recipe.sources:
            raise RawFolderError(f"--allow-empty {name}: recipe {recipe.name!r} has no such source")
    _check_out(out)
    plan = make_plan(recipe, {k: Path(v) for k, v in raw.items()})
    _check_inputs(recipe, plan, raw, allow_empty)
    prev = read_previous(previous or recipe.splits.inherit, recipe_path.parent if recipe_path else None)
    with BuildMutex(out / WORK_DIR, out, notes=progress):
        executor = LocalExecutor(workers or available_cores()) if scheduler is None else DaskExecutor(scheduler, workers)
        finished = False
        try:
            if scheduler is not None:
                seen = [str(Path(raw[s]).absolute()) for s in sorted(raw)]
                if checks_text(recipe):  # workers write the text they read beside the release, not in it
                    seen.append(str(private_dir(local_dir(out))))
                executor.check_workers(seen, out / WORK_DIR, text=checks_text(recipe))
            summary = _build(recipe, plan, out, executor, retry_failed, allow_empty, prev, progress)
            finished = True
            return summary
        finally:
            executor.close()
            if not finished:  # a full disk, Ctrl-C, SIGTERM: what the stopped workers were writing holds space
                remove_partial_writes(out / WORK_DIR)


def _build(recipe: Recipe, plan: Plan, out: Path, executor: Executor, retry_failed: bool,
           allow_empty: tuple[str, ...], prev, progress: bool) -> BuildSummary:
    cache = ClipCache(out / WORK_DIR)
    remove_partial_writes(cache.root)
    todo: list[ClipJob] = []
    for job in plan.jobs:
        if cache.has_result(job.key):
            continue
        if cache.failure(job.key) is not None:
            if not retry_failed:
                continue
            cache.forget_failure(job.key)
        todo.append(job)
    todo.sort(key=lambda j: -j.size)  # longest first: fewer idle workers at the end
    failed = Counter()
    with tqdm(total=len(todo), desc="ingest", unit="clip", disable=not progress) as bar:
        def done(job: ClipJob, result) -> None:
            failed["n"] += not isinstance(result, int)
            bar.set_postfix_str(f"{failed['n']} failed, {executor.workers} workers", refresh=False)
            bar.update()

        executor.run(ingest_in_worker, todo, (str(cache.root), str(local_dir(out))), done)

    failures = list(plan.failures)
    good: list[ClipJob] = []
    lost: list[str] = []
    for job in plan.jobs:
        failure = cache.failure(job.key)
        if failure is not None:
            failures.append(failure)
        elif cache.has_result(job.key):
            good.append(job)
        else:
            lost.append(job.video_id)
    if lost:  # ingested, yet neither frames nor a failure here: a worker wrote elsewhere
        raise BuildError(f"{len(lost)} clip(s) finished without leaving their frames in {cache.root} (first: "
                         f"{lost[0]}): a worker writes to storage this process does not see; nothing was lost, "
                         "run again once every worker sees --out")
    warnings = list(plan.warnings)
    _check_usable(recipe, plan, good, failures, allow_empty, warnings, out)
    facts = {job.key: cache.read_facts(job.key) for job in good}
    warnings += _fact_warnings(good, facts)

    links = content_links(plan.jobs) + column_links(plan.jobs)
    if recipe.splits.near_duplicates:
        links += near_duplicate_links(good, cache)
    previous, prev_splits = prev if prev else (None, None)
    if previous is not None:
        previous = previous.model_copy(update={"removed": removed_clips(prev_splits, plan.jobs)})
    splits, moved = assign_splits(plan.jobs, recipe, links, prev_splits)
    warnings += moved

    staging = cache.root / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tasks = plan_shards(good, splits, facts, recipe.shard_max_bytes, recipe.fact_fields())
    results: dict[int, ShardResult] = {}
    with tqdm(total=len(tasks), desc="write shards", unit="shard", disable=not progress) as bar:
        def written(task, result: ShardResult) -> None:
            results[result.index] = result
            bar.update()

        executor.run(write_shard, tasks, (str(cache.root), str(staging)), written)
    lock, shipped = local_version(make_lock(recipe, plan, failures, warnings, tasks, results, facts, previous))
    staged = seal(staging, lock)
    sheets: list[Path] = []  # drawn by a worker where there is a cluster: the driver holds no frame bytes
    executor.run(_contact_sheet, [str(staging)], (), lambda _, path: sheets.append(Path(path)))
    staged = add_attachment(staged, sheets[0])
    local = _write_local(local_dir(out), plan, good)
    _install(staging, out, staged.lock.files())
    if not failures:
        shutil.rmtree(cache.root, ignore_errors=True)
    return BuildSummary(
        out=out, name=lock.name, version=lock.version, phantom=lock.phantom, videos=lock.counts.videos,
        frames=lock.counts.frames, duplicates_dropped=lock.counts.duplicates_dropped, ingested=len(todo),
        reused=len(plan.jobs) - len(todo), failures=lock.failures, excluded=len(plan.excluded),
        warnings=lock.warnings, sheet_missing=plan.sheet_missing,
        sheet_missing_unshipped=plan.sheet_missing_unshipped, label_overrides=len(plan.label_overrides),
        groups=len({a.group for a in splits.values() if a.group}),
        per_source={s: sum(c.source == s for c in lock.clips) for s in sorted(recipe.sources)},
        local=local, previous_removed=previous.removed if previous else [], shipped=shipped,
    )


def _contact_sheet(root: str) -> str:
    from ..release.read import open_release

    return str(write_contact_sheet(open_release(Path(root))))


def _check_inputs(recipe: Recipe, plan: Plan, raw: dict, allow_empty: tuple[str, ...]) -> None:
    """Before anything is written: some clip somewhere, no source empty unless allowed,
    and the text detector wherever the recipe relies on it."""
    if not plan.jobs and not plan.failures:
        raise RawFolderError(f"no clips found in {', '.join(f'--raw {k}={v}' for k, v in sorted(raw.items()))}"
                             + (f" ({plural(len(plan.excluded), 'file')} excluded by the recipe)" if plan.excluded else ""))
    for name in sorted(recipe.sources):
        if plan.sources_found.get(name, 0) == 0 and name not in allow_empty:
            raise RawFolderError(f"--raw {name}={raw[name]}: no {recipe.sources[name].input} clips of source {name} "
                                 f"there; pass --allow-empty {name} to build without it")
    needs_text = sorted(n for n, s in recipe.sources.items() if s.text in ("mask", "exclude"))
    if needs_text:
        from ..media import text

        try:
            text.text_engine_versions()
        except text.TextEngineMissing:
            raise BuildError(f"source(s) {', '.join(needs_text)}: the recipe says text: mask/exclude, which needs "
                             "the burned-in text detector: pip install 'us4[text]'") from None


def _check_usable(recipe: Recipe, plan: Plan, good: list[ClipJob], failures: list[Failure],
                  allow_empty: tuple[str, ...], warnings: list[BuildWarning], out: Path) -> None:
    """A source with zero usable clips is an error unless allowed (then a warning)."""
    if not good:
        causes = Counter(f"{f.stage}: {f.reason}" for f in failures).most_common(2)
        raise ReleaseError(f"{out}: no clip could be used ({len(failures)} failed, {len(plan.excluded)} excluded by "
                           "the recipe); nothing to release" + "".join(f"; {n} x {c}" for c, n in causes))
    usable = Counter(j.source for j in good)
    for name in sorted(recipe.sources):
        if usable[name]:
            continue
        lost = sum(f.source == name for f in failures)
        if name not in allow_empty:
            raise ReleaseError(f"source {name}: no usable clip ({plan.sources_found.get(name, 0)} found, {lost} failed: "
                               f"the clips finished are kept in {out / WORK_DIR}); fix the source, or pass "
                               f"--allow-empty {name} to build without it")
        warnings.append(BuildWarning(source=name, video_id=None, kind=WarningKind.EMPTY_SOURCE,
                                     message=f"no usable clip ({lost} failed); built without it (--allow-empty)"))


def _fact_warnings(good: list[ClipJob], facts: dict[str, ClipFacts]) -> list[BuildWarning]:
    out = []
    for job in good:
        f = facts[job.key]
        if f.crop_fallback:
            out.append(BuildWarning(source=job.source, video_id=job.video_id, kind=WarningKind.CROP_FALLBACK,
                                    message="no scan region narrower than the frame was found: the full frame "
                                            "is kept (right for a clip already cropped to its image)"))
        if f.text.action == "warned":
            boxes = len(f.text.boxes)
            found = (f"burned-in text found ({plural(boxes, 'box', 'boxes')}), left in the pixels" if boxes else
                     "the file declares burned-in text (Burned In Annotation = YES) "
                     + ("but none was found inside the crop" if f.text.checked else "and no text check ran")
                     + "; left in the pixels")
            out.append(BuildWarning(source=job.source, video_id=job.video_id, kind=WarningKind.TEXT_FOUND,
                                    message=found))
        if f.views_left_out:
            n = f.views_left_out
            out.append(BuildWarning(source=job.source, video_id=job.video_id, kind=WarningKind.VIEW_LEFT_OUT,
                                    message=f"the file holds {n + 1} views (2D regions); the largest is kept and "
                                            f"{plural(n, 'view')} left out: the recipe's regions: each makes "
                                            "each view a clip of its own"))
        out += [BuildWarning(source=job.source, video_id=job.video_id, kind=WarningKind.REGION_LEFT_OUT,
                             message=problem) for problem in f.region_problems]
    return out


def _write_local(folder: Path, plan: Plan, good: list[ClipJob]) -> Path:
    """Where each video id came from, the text read in each clip, and the values the ledger's
    reasons leave out: for the holder of the raw data only, beside the release and never in it."""
    from .ingest import TEXT_READ

    private_dir(folder)
    atomic_write(folder / LOCAL_IDS, _csv(["video_id", "source", "path", "sha256"], plan.local_ids), private=True)
    atomic_write(folder / LOCAL_WITHHELD, _csv(["video_id", "source", "path", "reason"], plan.withheld), private=True)
    read = {j.video_id: folder / TEXT_READ / f"{j.key}.json" for j in good}
    text = {v: json.loads(p.read_text()) for v, p in read.items() if p.is_file()}
    atomic_write(folder / LOCAL_TEXT, json.dumps(text, indent=1, sort_keys=True).encode(), private=True)
    atomic_write(folder / "README.txt", (
        f"Files of the machine that built the release beside this folder, never part of it: {LOCAL_IDS} maps each\n"
        f"video id to the raw file or folder it came from; {LOCAL_TEXT} lists the burned-in text read in each clip;\n"
        f"{LOCAL_WITHHELD} gives the whole reason of each ledger entry whose published reason leaves out a value\n"
        "(a sheet cell, a file name). In the CSV files a cell that would start with = + - or @ starts with ' instead\n"
        "(so that no spreadsheet runs it). Keep them with the raw data: they may identify patients.\n").encode())
    return folder


def _csv(columns: list[str], rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([csv_cell(row[c]) for c in columns] for row in rows)
    return buf.getvalue().encode()


def _owned(out: Path) -> set[str] | None:
    """The files of `out` that us4 wrote: those its lock names, and those an install recorded
    before it began (one interrupted leaves no lock, or an older one); None where neither is
    there."""
    lock, record = out / LOCK_NAME, out / WORK_DIR / INSTALL_RECORD
    if not lock.is_file() and not record.is_file():
        return None
    owned = set(open_release(out).lock.files()) if lock.is_file() else set()
    if record.is_file():
        try:
            owned |= {safe_relpath(name, "file") for name in json.loads(record.read_bytes())}
        except (ValueError, TypeError):
            raise CacheError(f"{record}: damaged install record; check that --out holds nothing of yours, "
                             "delete the record and build again") from None
    return owned


def _check_out(out: Path) -> None:
    """Before any work: `out` is new, empty, or holds only what us4 wrote there (a release,
    the files of an interrupted install, the build's work folder); anything else is the
    user's, and a build never goes on beside it."""
    if out.exists() and not out.is_dir():
        raise ReleaseError(f"--out {out}: exists and is not a folder")
    if not out.is_dir():
        return
    owned = _owned(out)
    here = files_here(out)
    if owned is None:
        others = here or sorted(name for name in os.listdir(out) if name != WORK_DIR)
        if others:
            raise ReleaseError(f"--out {out}: folder is not empty and holds no us4 release (first: {others[0]}); "
                               "choose an empty or new folder")
        return
    others = [name for name in here if name not in owned]
    if others:
        whose = ("its lock does not name" if (out / LOCK_NAME).is_file()
                 else "that neither a release nor an interrupted build of us4 wrote")
        raise ReleaseError(f"--out {out}: the folder also holds {plural(len(others), 'file')} {whose} (first: "
                           f"{others[0]}); a release folder holds nothing else: move them out first")


def _install(staging: Path, out: Path, files: list[str]) -> None:
    """Move the staged release's `files` into place, file by file, deleting only files us4
    wrote (see `_owned`). Every file this install may touch is recorded in the work folder
    before the first change, and the lock goes first out and last in: a folder with a lock is
    always a complete release, and after an interruption at any instant the next run knows
    which files there are its own, and installs again from the cache."""
    record = out / WORK_DIR / INSTALL_RECORD
    old = _owned(out) or set()
    atomic_write(record, json.dumps(sorted(old | set(files))).encode())
    (out / LOCK_NAME).unlink(missing_ok=True)
    for name in sorted(old - set(files)):  # an earlier release's files this one lacks (an attached benchmark)
        gone = inside(out, name, "file")  # never through a link to elsewhere
        gone.unlink(missing_ok=True)
        _prune(out, gone.parent)
    for name in files:
        if name != LOCK_NAME:
            target = inside(out, name, "file")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, target)
    os.replace(staging / LOCK_NAME, out / LOCK_NAME)
    record.unlink()
    shutil.rmtree(staging, ignore_errors=True)


def _prune(out: Path, folder: Path) -> None:
    """Remove `folder` and its parents below `out` while they are empty."""
    while folder != out and folder.is_relative_to(out):
        try:
            folder.rmdir()
        except OSError:  # not empty: someone's files are in it
            return
        folder = folder.parent
