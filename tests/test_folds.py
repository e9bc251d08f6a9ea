"""Folds balanced by class: the split rule on made-up units (whole groups, largest first, each
class as even as its groups allow, whatever the input order), inherited splits that give way
where they would leave a fold without a class, the real POCUS sample's folds, and the
warnings of `us4 audit` and the card."""
from __future__ import annotations

import hashlib
import random
from collections import Counter

from click.testing import CliRunner

from us4.builder import build_release
from us4.builder.plan import ClipJob
from us4.builder.splits import PreviousSplits, assign_splits
from us4.cli import main
from us4.contract.lock import WarningKind
from us4.media import ClipRef
from us4.recipe import Recipe, parse_recipe
from us4.release.audit import balance_warnings
from us4.release.read import open_release, read_lock_ref

from .conftest import REPO
from .test_build import clips, tiny_recipe


def job(name: str, label: str) -> ClipJob:
    sha = hashlib.sha256(name.encode()).hexdigest()
    return ClipJob(source="butterfly", video_id=f"butterfly/{name}", rel_path=name, ref=ClipRef("video", (name,)),
                   label=label, label_id=0, us4_label=None, probe="convex", organ="lung", licence="x", sha256=sha,
                   size=1, group_key=None, params={}, key=sha, facts={})


def recipe(seed: int = 1, **splits) -> Recipe:
    return parse_recipe({"name": "t", "version": "0.0.1", "seed": seed,
                         "sources": {"butterfly": {"sampling": {"every_n": 1}}},
                         "splits": splits or {"kind": "folds", "k": 5}})


def made_up(sizes: dict[str, list[int]]) -> tuple[list[ClipJob], list[tuple[str, str]]]:
    """Clips of each class in units of the given sizes, and the links that join each unit."""
    jobs, links = [], []
    for label, units in sizes.items():
        for u, size in enumerate(units):
            members = [job(f"{label}_{u}_{i}.mp4", label) for i in range(size)]
            jobs += members
            links += [(members[0].video_id, m.video_id) for m in members[1:]]
    return jobs, links


def per_fold(assigned: dict, jobs: list[ClipJob], label: str, k: int = 5) -> list[int]:
    n = Counter(assigned[j.video_id].split for j in jobs if j.label == label)
    return [n[f"fold{i}"] for i in range(k)]


def test_a_class_of_k_videos_gets_one_per_fold():
    jobs, links = made_up({"covid": [1] * 5, "regular": [1] * 13, "pneumonia": [2, 2, 1]})
    assigned, _ = assign_splits(jobs, recipe(), links)
    assert per_fold(assigned, jobs, "covid") == [1, 1, 1, 1, 1]
    assert sorted(per_fold(assigned, jobs, "regular")) == [2, 2, 3, 3, 3]
    assert sorted(per_fold(assigned, jobs, "pneumonia")) == [0, 0, 1, 2, 2]  # 3 units for 5 folds


def test_groups_stay_whole_and_no_class_spreads_wider_than_its_largest_group():
    rng = random.Random(7)
    for trial in range(20):
        sizes = {label: [rng.choice([1, 1, 1, 2, 3, 4]) for _ in range(rng.randint(5, 14))]
                 for label in ("covid", "pneumonia", "regular")}
        jobs, links = made_up(sizes)
        assigned, _ = assign_splits(jobs, recipe(seed=trial), links)
        for a, b in links:
            assert assigned[a].split == assigned[b].split and assigned[a].group == assigned[b].group is not None
        for label, units in sizes.items():
            counts = per_fold(assigned, jobs, label)
            assert max(counts) - min(counts) <= max(units), (trial, label, units, counts)
            assert min(counts) > 0, (trial, label, units, counts)  # 5 units or more: every fold holds one


def test_the_deal_is_largest_first_whatever_the_input_order():
    """Units of 1, 1 and 2 over 2 folds: dealt as they come, the two singles take a fold each and
    the pair makes it 3 to 1; largest first gives 2 and 2, in every order of the input."""
    jobs, links = made_up({"covid": [1, 1, 2], "regular": [1, 1]})
    first = None
    for order in range(6):
        shuffled = jobs[:]
        random.Random(order).shuffle(shuffled)
        assigned, _ = assign_splits(shuffled, recipe(kind="folds", k=2), list(reversed(links)) if order % 2 else links)
        assert per_fold(assigned, jobs, "covid", k=2) == [2, 2]
        first = first or assigned
        assert assigned == first  # the input's order changes nothing


def test_big_groups_of_two_classes_leave_no_fold_without_either():
    """3 folds; covid in units of 3, 2 and 1, regular in units of 3, 1 and 1. Dealing each class
    to fill per-fold quotas (rounded, with what the other class left over) put regular at 2/3/0;
    dealt to where each class lies furthest below its share, every fold holds both."""
    jobs, links = made_up({"covid": [3, 2, 1], "regular": [3, 1, 1]})
    for seed in range(12):
        assigned, _ = assign_splits(jobs, recipe(seed=seed, kind="folds", k=3), links)
        assert sorted(per_fold(assigned, jobs, "covid", k=3)) == [1, 2, 3], seed
        assert sorted(per_fold(assigned, jobs, "regular", k=3)) == [1, 1, 3], seed


def test_a_groups_other_classes_count_where_it_goes():
    """A group of two regular clips and one covid clip, two more regular clips and one covid clip,
    2 folds: the group's covid clip must count, or both covid clips can land in one fold."""
    for seed in range(24):
        jobs, links = made_up({"regular": [2, 1, 1], "covid": [1]})
        group = [j for j in jobs if j.video_id.startswith("butterfly/regular_0_")]
        extra = job("covid_in_group.mp4", "covid")
        jobs.append(extra)
        links.append((group[0].video_id, extra.video_id))
        assigned, _ = assign_splits(jobs, recipe(seed=seed, kind="folds", k=2), links)
        assert per_fold(assigned, jobs, "covid", k=2) == [1, 1], seed
        assert per_fold(assigned, jobs, "regular", k=2) == [2, 2], seed


def test_holdout_keeps_the_validation_share_of_each_class():
    jobs, links = made_up({"covid": [1] * 10, "regular": [1] * 20, "pneumonia": [2] * 5})
    assigned, _ = assign_splits(jobs, recipe(kind="holdout", validation=0.2), links)
    validation = Counter(j.label for j in jobs if assigned[j.video_id].split == "validation")
    assert validation == {"covid": 2, "regular": 4, "pneumonia": 2}


def test_a_seed_changes_which_clips_go_where_not_how_many():
    jobs, links = made_up({"covid": [1] * 7, "regular": [1] * 11})
    a, _ = assign_splits(jobs, recipe(seed=1), links)
    b, _ = assign_splits(jobs, recipe(seed=2), links)
    assert a != b
    for label in ("covid", "regular"):
        assert sorted(per_fold(a, jobs, label)) == sorted(per_fold(b, jobs, label))


def previous_of(assigned: dict[str, str], jobs: list[ClipJob], name: str = "t") -> PreviousSplits:
    by_id = {j.video_id: j for j in jobs}
    return PreviousSplits(name=name, version="0.0.0", by_id=assigned,
                          by_sha256={by_id[v].sha256: s for v, s in assigned.items()},
                          clips=tuple((v, by_id[v].sha256) for v in assigned))


def test_inherited_folds_give_way_where_they_would_leave_a_fold_without_a_class():
    """An earlier release put its 5 covid clips in folds 0-3 (two in fold 0): kept as they were,
    fold 4 would test no covid clip. One covid clip of fold 0 moves, with a warning saying why;
    every other clip keeps its fold."""
    jobs, links = made_up({"covid": [1] * 5, "regular": [1] * 10})
    covid = [j.video_id for j in jobs if j.label == "covid"]
    regular = [j.video_id for j in jobs if j.label == "regular"]
    before = {v: f"fold{i % 4}" for i, v in enumerate(covid)} | {v: f"fold{i % 5}" for i, v in enumerate(regular)}
    assigned, warnings = assign_splits(jobs, recipe(), links, previous_of(before, jobs))
    assert per_fold(assigned, jobs, "covid") == [1, 1, 1, 1, 1]
    moved = [v for v in before if assigned[v].split != before[v]]
    assert len(moved) == 1 and before[moved[0]] == "fold0" and assigned[moved[0]].split == "fold4"
    (w,) = [w for w in warnings if w.kind == WarningKind.SPLIT_MOVED]
    assert w.video_id == moved[0]
    assert w.message.startswith("was in fold0; with its unit kept in fold0: fold4 holds no butterfly/covid video "
                                "(2/1/1/1/0 videos in fold0-fold4, 1 each is its share)")
    assert w.message.endswith("so the unit was dealt again: now in fold4")


def test_inherited_folds_that_balance_allows_are_all_kept():
    """Folds of an earlier deal with another seed (where this one would put some clips elsewhere),
    no class emptier or wider than its largest group forces: nothing moves, the new clip is dealt."""
    jobs, links = made_up({"covid": [2, 1, 1, 1, 1, 1], "regular": [1] * 10})
    new = "butterfly/covid_5_0.mp4"
    earlier, _ = assign_splits([j for j in jobs if j.video_id != new], recipe(seed=99), links)
    before = {v: a.split for v, a in earlier.items()}
    plain, _ = assign_splits(jobs, recipe(), links)
    assert any(plain[v].split != s for v, s in before.items())
    assigned, warnings = assign_splits(jobs, recipe(), links, previous_of(before, jobs))
    assert {v: assigned[v].split for v in before} == before and not warnings
    assert max(per_fold(assigned, jobs, "covid")) - min(per_fold(assigned, jobs, "covid")) <= 2


def test_the_pocus_sample_folds_hold_every_class(pocus_release):
    """The shipped 1.1.0 lock left fold 4 without a covid clip (4/6/1/3/0); this recipe keeps its
    folds only where balance allows: every fold holds every class, groups stay whole."""
    old = read_lock_ref("pocus-1.1.0")[0]
    old_counts = Counter((c.split, c.label) for c in old.clips)
    assert [old_counts[(f"fold{i}", "covid")] for i in range(5)] == [4, 6, 1, 3, 0]
    lock = open_release(pocus_release).lock
    counts = Counter((c.split, c.label) for c in lock.clips)
    for label in ("covid", "pneumonia", "regular"):
        assert all(counts[(f"fold{i}", label)] > 0 for i in range(5)), (label, counts)
    groups: dict[str, set[str]] = {}
    for c in lock.clips:
        if c.group:
            groups.setdefault(c.group, set()).add(c.split)
    assert groups and all(len(s) == 1 for s in groups.values())
    # every clip that left its 1.1.0 fold says why, and most kept theirs
    was = {c.video_id: c.split for c in old.clips}
    moved = {c.video_id for c in lock.clips if was.get(c.video_id) not in (None, c.split)}
    warned = {w.video_id for w in lock.warnings if w.kind == WarningKind.SPLIT_MOVED}
    assert moved == warned and 0 < len(moved) <= 6
    assert lock.previous.name == "pocus" and lock.previous.version == "1.1.0"
    assert balance_warnings(lock) == []


def test_audit_warns_of_the_shipped_1_1_0_folds():
    lines = balance_warnings(read_lock_ref("pocus-1.1.0")[0])
    assert lines[0] == "fold4 holds no pocus/covid video (4/6/1/3/0 videos in fold0-fold4, 2.8 each is its share)"
    assert lines[1].startswith("pocus/covid is spread 6 videos apart (4/6/1/3/0 videos in fold0-fold4, 2.8 each is "
                               "its share), more than its largest group forces (3): a group goes to one split whole")
    assert len(lines) == 2  # pneumonia 4/3/4/4/3 and regular 6/7/4/7/5 are as even as their groups allow


def test_audit_and_card_mark_a_fold_without_a_class(tmp_path):
    """One covid clip over 2 folds: one fold must lack it, and the audit and the card say so."""
    raw = clips(tmp_path / "raw", ["Covphantom_0.mp4"] + [f"Regphantom_{i}.mp4" for i in range(4)], n_frames=8)
    out = tmp_path / "rel"
    build_release(tiny_recipe(tmp_path, splits={"kind": "folds", "k": 2}), {"butterfly": raw}, out, workers=1,
                  progress=False)
    lock = open_release(out).lock
    (empty,) = {"fold0", "fold1"} - {c.split for c in lock.clips if c.label == "covid"}
    result = CliRunner().invoke(main, ["audit", str(out)])
    assert result.exit_code == 0, result.output  # a warning, not a failure
    assert (f"warning: {empty} holds no butterfly/covid video (" in result.output
            and "it has 1 unit (a group, or a clip alone) for 2 splits, so some split must lack it" in result.output)
    card = (out / "README.md").read_text()
    assert f"**A split lacks a class**: {empty} holds no butterfly/covid video" in card
    row = next(line for line in card.splitlines() if line.startswith("| butterfly | covid |"))
    assert row.split(" | ")[2 if empty == "fold0" else 3] == "**none**"


def test_audit_of_a_release_without_labels_says_balance_is_unchecked():
    """A format 1 release (us4 0.1.0) recorded no labels: no claim that every split holds every class."""
    result = CliRunner().invoke(main, ["audit", str(REPO / "tests" / "fixtures" / "release-0.1.0")])
    assert result.exit_code == 0, result.output
    assert "warning: the lock records no labels (a release of us4 0.1.0)" in result.output
    assert "every split holds every class" not in result.output
