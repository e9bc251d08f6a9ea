"""Check a release's files against its lock, and a lock against a published manifest."""
from __future__ import annotations

import pyarrow.parquet as pq

from ..hashing import sha256_file, sha256_json
from .read import CARD_NAME, LOCK_NAME, Release


def lock_sha256(lock: dict) -> str:
    """Hash of a lock's canonical JSON: names a release's exact content."""
    return sha256_json(lock)


def verify_release(release: Release) -> list[str]:
    """Recompute every hash and row count named by the lock.

    Returns one problem per file that differs, each starting with the file's path
    relative to the release; an empty list means the release is intact.
    """
    problems: list[str] = []
    listed: set[str] = set()
    for shard in release.lock["shards"]:
        rel = shard["path"]
        listed.add(rel)
        path = release.root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        size = path.stat().st_size
        if size != shard["bytes"]:
            problems.append(f"{rel}: {size} bytes, lock says {shard['bytes']} (truncated or replaced)")
            continue
        digest = sha256_file(path)
        if digest != shard["sha256"]:
            problems.append(f"{rel}: sha256 {digest[:12]}… differs from lock {shard['sha256'][:12]}… (modified)")
            continue
        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # noqa: BLE001 - any Parquet failure is a finding here
            problems.append(f"{rel}: unreadable Parquet ({exc})")
            continue
        if rows != shard["rows"]:
            problems.append(f"{rel}: {rows} rows, lock says {shard['rows']}")
    for rel, digest in sorted(release.lock.get("attachments", {}).items()):
        listed.add(rel)
        path = release.root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{rel}: sha256 differs from lock (modified)")
    data = release.root / "data"
    if data.is_dir():
        for path in sorted(data.rglob("*")):
            rel = path.relative_to(release.root).as_posix()
            if path.is_file() and rel not in listed:
                problems.append(f"{rel}: not in the lock (stray file)")
    problems.extend(_check_card(release))
    return problems


def _check_card(release: Release) -> list[str]:
    """The card is regenerated from the lock and compared byte for byte, but only when
    this us4 is the version that built the release: another version may render cards
    differently, and that must not make an intact older release fail to download."""
    from .. import __version__
    from .card import render_card  # the card is a pure function of the release

    path = release.root / CARD_NAME
    if not path.is_file():
        return [f"{CARD_NAME}: missing"]
    built_by = release.lock.get("environment", {}).get("us4")
    if built_by == __version__ and path.read_bytes() != render_card(release).encode():
        return [f"{CARD_NAME}: differs from the card generated from {LOCK_NAME} (hand-edited or stale)"]
    return []


def compare_to_manifest(lock: dict, manifest: dict) -> list[str]:
    """What differs between a rebuilt release's lock and a published manifest.

    Names the clips, shards, recipe and library versions that differ; frames whose
    pixels match but whose PNG bytes do not point at the encoder (zlib/Pillow).
    """
    out: list[str] = []
    if lock.get("recipe_sha256") != manifest.get("recipe_sha256"):
        out.append(f"recipe: sha256 {lock.get('recipe_sha256', '?')[:12]}… vs manifest "
                   f"{manifest.get('recipe_sha256', '?')[:12]}… (the recipe differs)")
    env_a, env_b = lock.get("environment", {}), manifest.get("environment", {})
    for key in sorted(set(env_a) | set(env_b)):
        if env_a.get(key) != env_b.get(key):
            out.append(f"library {key}: {env_a.get(key)} here, {env_b.get(key)} in the manifest")
    mine = {i["path"]: i for i in lock.get("inputs", [])}
    theirs = {i["path"]: i for i in manifest.get("inputs", [])}
    for path in sorted(set(theirs) - set(mine)):
        out.append(f"clip {path}: in the manifest, not in this build")
    for path in sorted(set(mine) - set(theirs)):
        out.append(f"clip {path}: in this build, not in the manifest")
    for path in sorted(set(mine) & set(theirs)):
        if mine[path]["sha256"] != theirs[path]["sha256"]:
            out.append(f"clip {path}: sha256 {mine[path]['sha256'][:12]}… vs manifest "
                       f"{theirs[path]['sha256'][:12]}… (a different file)")
    fail_a = {f["path"] for f in lock.get("failures", [])}
    fail_b = {f["path"] for f in manifest.get("failures", [])}
    for path in sorted(fail_a - fail_b):
        out.append(f"clip {path}: failed here, built in the manifest")
    for path in sorted(fail_b - fail_a):
        out.append(f"clip {path}: failed in the manifest, built here")
    shards_a = {s["path"]: s for s in lock.get("shards", [])}
    shards_b = {s["path"]: s for s in manifest.get("shards", [])}
    for path in sorted(set(shards_a) | set(shards_b)):
        a, b = shards_a.get(path), shards_b.get(path)
        if a is None or b is None:
            out.append(f"shard {path}: {'missing here' if a is None else 'not in the manifest'}")
        elif (a["sha256"], a["rows"]) != (b["sha256"], b["rows"]):
            out.append(f"shard {path}: sha256 {a['sha256'][:12]}… ({a['rows']} rows) vs manifest "
                       f"{b['sha256'][:12]}… ({b['rows']} rows)")
    lin_a, lin_b = lock.get("lineage", {}), manifest.get("lineage", {})
    pix_a, pix_b = lin_a.get("frame_sha256", []), lin_b.get("frame_sha256", [])
    if pix_a and pix_a == pix_b and any(o.startswith("shard ") for o in out):
        out.append("frames: every frame's pixels match the manifest; only the encoded bytes differ "
                   "(PNG/zlib or Parquet writer version)")
    elif pix_a != pix_b:
        changed = sum(1 for x, y in zip(pix_a, pix_b) if x != y) + abs(len(pix_a) - len(pix_b))
        out.append(f"frames: {changed} of {max(len(pix_a), len(pix_b))} frames differ in pixels")
    return out
