"""The lock (`release.json`) of a build: what it was built from and what it holds."""
from __future__ import annotations

from collections.abc import Sequence

from ..contract.lock import (
    FORMAT,
    BuildWarning,
    Clip,
    Counts,
    Environment,
    Failure,
    Lock,
    Previous,
    Sheet,
    SplitTally,
)
from ..recipe import Recipe
from .environment import byte_libraries, host
from .cache import ClipFacts
from .plan import Plan, checks_text
from .writer import ShardResult, ShardTask


def make_lock(recipe: Recipe, plan: Plan, failures: Sequence[Failure], warnings: Sequence[BuildWarning],
              tasks: Sequence[ShardTask], results: dict[int, ShardResult], facts: dict[str, ClipFacts],
              previous: Previous | None) -> Lock:
    """The lock of a finished build (no attachments, no generated files yet)."""
    shards = [results[t.index].shard for t in tasks]
    clips: list[Clip] = []
    tally: dict[str, dict[str, list[int]]] = {}
    for task in tasks:
        if task.config != "frames":
            continue
        for slot in task.slots:
            job, at = slot.job, slot.at
            indices, pixels = results[task.index].frames[job.video_id]
            text = facts[job.key].text
            clips.append(Clip(video_id=job.video_id, source=job.source, sha256=job.sha256, bytes=job.size,
                              label=job.label, split=at.split, fold=at.fold, group=at.group, shard=task.index,
                              row=slot.row, frame_id=slot.frame_id, frame_index=indices, frame_sha256=pixels,
                              text=text.action if text.checked or text.action != "none" else None,
                              facts=job.facts, licence=job.licence))
            n = tally.setdefault(at.split, {}).setdefault(f"{job.source}/{job.label}", [0, 0])
            n[0] += 1
            n[1] += slot.rows
    frames = sum(len(c.frame_index) for c in clips)
    return Lock(
        format=FORMAT,
        name=recipe.name + ("-phantom" if plan.phantom else ""),
        version=recipe.version + ("-phantom" if plan.phantom else ""),
        description=recipe.description,
        phantom=plan.phantom,
        recipe=recipe,
        recipe_sha256=recipe.sha256,
        environment=Environment(bytes=byte_libraries(text=checks_text(recipe)), host=host()),
        previous=previous,
        clips=clips,
        failures=sorted(failures, key=lambda f: f.video_id),
        excluded=plan.excluded,
        warnings=sorted(warnings, key=lambda w: (w.source, w.video_id or "", w.kind)),
        sheet=Sheet(missing=plan.sheet_missing, label_overrides=plan.label_overrides),
        sheets=sorted(plan.sheets, key=lambda f: (f.source, f.path)),
        counts=Counts(
            videos=len(clips), frames=frames,
            duplicates_dropped=sum(facts[s.job.key].n_duplicates_dropped for t in tasks if t.config == "frames"
                                   for s in t.slots),
            failures=len(failures), excluded=len(plan.excluded),
            by_split_label={sp: {k: SplitTally(videos=v[0], frames=v[1]) for k, v in sorted(labels.items())}
                            for sp, labels in sorted(tally.items())}),
        shards=shards,
        attachments={},
        generated={},
    )
