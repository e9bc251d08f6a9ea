"""The release's card (README.md): a pure function of the lock, never hand-edited.

`render_card` reads the lock, the source definitions (registry or recipe) and files
the lock names and so pins by sha256 (its attachments; for a source licensed per clip,
the `licence` column of its `videos` table), and nothing that varies between machines or
runs (no clock, no absolute path). The build records the card's sha256 and `CARD_FORMAT` in
the lock; `us4 verify` checks that hash and never renders a card again, so a release
stays verifiable whatever later us4 renders. The card never shows the lock's own
hash (the lock holds the card's: no cycle).
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable

import yaml

from ..errors import ReleaseError
from ..media.sampling import SamplingPolicy
from ..escape import markdown as md
from ..recipe import CropSpec, Folds, Splits
from ..registry import CITATIONS, SOURCES, Source
from ..words import plural
from .benchmark import read_benchmark
from .benchmark_card import benchmark_markdown
from .licences import licence_notes, lock_only_notice
from .lock import CROISSANT_NAME, Lock, WarningKind
from .schema import release_schemas

#: Bump when the card's text or layout changes; recorded in the lock beside its sha256.
CARD_FORMAT = 4
CONFIGS = ("frames", "videos")
CONTACT_SHEET = "assets/contact_sheet.png"
BENCHMARK = "benchmark.json"
#: reads a file's bytes by its path in the lock (an attachment, a shard)
ReadAttachment = Callable[[str], bytes]


# --- YAML header -----------------------------------------------------------------


def hub_configs(lock: Lock) -> list[dict]:
    """The `configs` block that lets the Hub viewer and `datasets.load_dataset` read the release."""
    configs = []
    for config in CONFIGS:
        configs.append({
            "config_name": config,
            "data_files": [{"split": sp, "path": f"data/{config}/*/{sp}-*.parquet"} for sp in _splits(lock, config)],
            **({"default": True} if config == "frames" else {}),
        })
    return configs


def hub_dataset_info(lock: Lock) -> list[dict]:
    """`dataset_info` per config: features (from the release schema) and rows per split (from the lock)."""
    out = []
    schemas = release_schemas(lock.fact_fields())
    for config in CONFIGS:
        rows: dict[str, int] = defaultdict(int)
        size: dict[str, int] = defaultdict(int)
        for shard in lock.shards_of(config):
            rows[shard.split] += shard.rows
            size[shard.split] += shard.bytes
        features = json.loads(schemas[config].metadata[b"huggingface"])["info"]["features"]
        out.append({
            "config_name": config,
            "features": [{"name": name, **_yaml_feature(features[name])} for name in schemas[config].names],
            # num_bytes: the split's Parquet bytes, known from the lock (images are PNG, so close to
            # the Arrow size `datasets` means); `datasets` checks num_examples, which is exact
            "splits": [{"name": sp, "num_bytes": size[sp], "num_examples": rows[sp]} for sp in _splits(lock, config)],
            "download_size": sum(s.bytes for s in lock.shards_of(config)),
        })
    return out


def _yaml_feature(feature: dict) -> dict:
    """A feature of the schema's `huggingface` metadata, in the card's YAML spelling."""
    kind = feature["_type"]
    if kind == "Image":
        return {"dtype": "image"}
    if kind == "Value":
        return {"dtype": feature["dtype"]}
    if kind == "List":
        inner = feature["feature"]
        if inner["_type"] == "List":  # a list of fixed-size lists (boxes): spelled as a nested sequence
            return {"sequence": {"sequence": _yaml_feature(inner["feature"])["dtype"]}}
        inner = _yaml_feature(inner)
        if set(inner) != {"dtype"}:
            raise ValueError(f"card: nested list feature {feature} has no YAML spelling here")
        return {"list": inner["dtype"], **({"length": feature["length"]} if "length" in feature else {})}
    raise ValueError(f"card: unknown feature type {kind!r}")


def _splits(lock: Lock, config: str) -> list[str]:
    return sorted({s.split for s in lock.shards_of(config)})


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "n>1M"


# --- body ----------------------------------------------------------------------


def title(lock: Lock) -> str:
    """`NAME VERSION`, and loudly so when the clips were phantoms that us4 generated."""
    return f"{lock.name} {lock.version}" + (" (PHANTOM: synthetic clips, not real data)" if lock.phantom else "")


def render_card(lock: Lock, read_attachment: ReadAttachment, *, alone: str | None = None) -> str:
    """The card of a release with this lock; `read_attachment` reads files the lock names.

    `alone`: the card of a repository that holds the lock, recipe and card alone (`us4 publish
    --lock-only`), naming the lock a rebuild is verified against (ORG/NAME@vVERSION): it says how
    to rebuild, and offers the Hub no data files to read."""
    sources = sorted(lock.recipe.sources)
    header = {
        "pretty_name": title(lock),
        "license": "other",
        "license_name": "per-source",
        "tags": ["ultrasound", "medical-imaging", "video-frames", "us4"] + (["synthetic"] if lock.phantom else []),
        "task_categories": ["image-classification"],
        "size_categories": [_size_category(lock.counts.frames)],
        **({} if alone else {"configs": hub_configs(lock), "dataset_info": hub_dataset_info(lock)}),
    }
    parts = [
        "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---",
        _intro(lock, sources, alone),
        _sources_table(lock, sources),
        _counts_table(lock),
        "" if alone else _facts_section(lock),
        "" if alone else _contact_sheet_section(lock),
        _recipe_section(lock, sources),
        _groups_section(lock),
        _identity_section(lock, sources),
        _ledger_section(lock),
        _benchmark_section(lock, read_attachment),
        _licence_section(lock, sources),
        _citation_section(lock, sources),
        _provenance_section(lock),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def source_definition(lock: Lock, name: str) -> Source:
    """The registry's (or, for a source the recipe declares, the recipe's) facts of a source."""
    return lock.recipe.sources[name].definition


def _intro(lock: Lock, sources: list[str], alone: str | None) -> str:
    counts = lock.counts
    corpora = sorted({source_definition(lock, s).corpus for s in sources})
    phantom = ([f"**This release is a phantom.** Its {counts.videos} videos are synthetic clips that us4 "
                "generates for its demo and tests; no patient and no scanner is behind them. Use it to try "
                "the tools, never as data.", ""] if lock.phantom else [])
    burned_in = [line for note in burned_in_text(lock) for line in (f"**Burned-in text.** {note}", "")]
    licences = [line for note in licence_notes(lock) for line in (note, "")]
    return "\n".join([
        f"# {md(title(lock))}",
        "",
        *([lock_only_notice(lock, alone), ""] if alone else []),
        *phantom,
        *licences,
        *burned_in,
        *(line for paragraph in re.split(r"\n\s*\n", lock.description.strip()) if paragraph
          for line in (md(" ".join(paragraph.split("\n"))), "")),  # the recipe's paragraphs, each text only
        f"Frames sampled from ultrasound clips ({', '.join(map(md, corpora))}; "
        f"sources: {', '.join(map(md, sources))}), "
        f"built by us4 from raw clips with a recipe recorded in `release.json`, "
        f"which also holds the sha256 of every input clip and every shard. "
        f"{plural(counts.videos, 'video')}, {plural(counts.frames, 'frame')}; "
        f"{plural(counts.failures, 'clip')} failed; the failure ledger below lists them.",
        "",
        "Two configs: `frames` (one row per frame: the PNG image, its label, split, source video, "
        "crop box, hashes) and `videos` (one row per clip: input kind, codec, frame rate, size, pixel "
        "spacing, licence, and the ordered `frame_ids` of its frames). Splits are by video, never by frame. "
        "Shards lie under `data/CONFIG/SOURCE/SPLIT-*.parquet`, so one source or one split can be "
        "fetched alone." + ("" if alone else f" `{CROISSANT_NAME}` describes the release in Croissant (MLCommons)."),
        *([] if alone else [  # a repository of the lock alone has nothing to load
            "",
            "```python",
            "import us4  # verifies every file against release.json before use",
            f'ds = us4.load("ORG/NAME", revision="v{lock.version}", config="frames")',
            "",
            "from datasets import load_dataset  # the same files, without verification",
            f'ds = load_dataset("ORG/NAME", "frames", revision="v{lock.version}")',
            "```",
            "",
            "`ORG/NAME` is the repository holding this card.",
        ]),
    ])


def burned_in_text(lock: Lock) -> list[str]:
    """A sentence per source whose released frames keep burned-in text (found by the text
    check, or declared by the file), saying how to paint it out: the build prints these
    and the card opens with them."""
    specs = lock.recipe.sources
    left = Counter(c.source for c in lock.clips if c.text == "warned")
    total = Counter(c.source for c in lock.clips)
    notes = []
    for source in sorted(left):
        spec = specs[source]
        names = (" Its file names are published too (`ids: path`); `ids: hash` names clips by their content instead."
                 if spec.ids == "path" else "")
        notes.append(f"source {source}: text burned into the frames of {left[source]} of its {total[source]} clips is "
                     f"published as it is (recipe: `text: {spec.text}`); such text often names a patient, a place or "
                     f"a date. To paint it out, set `text: mask` for {source} in the recipe (`text: exclude` leaves "
                     f"those clips out).{names}")
    return notes


def _per_source_label(lock: Lock) -> dict[str, dict[str, dict[str, tuple[int, int]]]]:
    """{source: {label: {split: (videos, frames)}}} from the lock's `by_split_label`."""
    out: dict[str, dict[str, dict[str, tuple[int, int]]]] = defaultdict(lambda: defaultdict(dict))
    for split, labels in lock.counts.by_split_label.items():
        for key, n in labels.items():
            source, _, label = key.partition("/")
            out[source][label][split] = (n.videos, n.frames)
    return out


def _sources_table(lock: Lock, sources: list[str]) -> str:
    recipe = lock.recipe.sources
    tally = _per_source_label(lock)
    rows = ["| source | corpus | organ | probe | input | classes | videos | frames | licence |",
            "|---|---|---|---|---|---|---:|---:|---|"]
    for name in sources:
        src, spec = source_definition(lock, name), recipe[name]
        classes = spec.classes or [c.name for c in src.classes]
        probes = spec.probes or [src.probe]
        videos = sum(n[0] for by_split in tally[name].values() for n in by_split.values())
        frames = sum(n[1] for by_split in tally[name].values() for n in by_split.values())
        rows.append(f"| {md(name)} | {md(src.corpus)} | {md(src.organ)} | {md(', '.join(probes))} "
                    f"| {md(spec.input)} | {md(', '.join(classes))} | {videos} | {frames} "
                    f"| {md(src.licence)} |")
    return "## Sources\n\n" + "\n".join(rows)


def _counts_table(lock: Lock) -> str:
    named = list(lock.recipe.splits.weights())  # a split whose every clip failed is shown too
    splits = named + sorted(set(lock.counts.by_split_label) - set(named))
    tally = _per_source_label(lock)
    rows = ["| source | label | " + " | ".join(splits) + " | total |", "|---|---|" + "---:|" * (len(splits) + 1)]
    totals = {sp: [0, 0] for sp in splits}
    lacking = []
    for source in sorted(tally):
        for label in sorted(tally[source]):
            by_split = tally[source][label]
            cells = []
            for sp in splits:
                v, f = by_split.get(sp, (0, 0))
                totals[sp][0] += v
                totals[sp][1] += f
                cells.append(f"{f} ({v})" if v else "**none**")
                if not v:
                    lacking.append(f"{sp} holds no {md(source)}/{md(label)} video")
            v = sum(n[0] for n in by_split.values())
            f = sum(n[1] for n in by_split.values())
            rows.append(f"| {md(source)} | {md(label)} | " + " | ".join(cells) + f" | {f} ({v}) |")
    all_v = sum(t[0] for t in totals.values())
    all_f = sum(t[1] for t in totals.values())
    rows.append("| **all** | | " + " | ".join(f"{t[1]} ({t[0]})" for t in totals.values())
                + f" | {all_f} ({all_v}) |")
    warning = ([f"**A split lacks a class**: {'; '.join(lacking)} (**none** in the table). A model tested on such a "
                "split is never tested on that class; `us4 audit` reports it with what the groups force.", ""]
               if lacking else [])
    return "\n".join(["## Counts by split and label", "", "Frames (videos) per split.", "", *warning, *rows])


def _facts_section(lock: Lock) -> str:
    """Per source and class, what the recipe's facts say of its clips: the mean of a number, the
    share of yes of a flag, how many clips have a text; each over the clips that have a value."""
    specs = lock.recipe.sources
    sources = [s for s in sorted(specs) if specs[s].facts]
    if not sources:
        return ""
    lines = ["## Facts", "",
             "Per-video facts the recipe reads from a sheet, columns of the `videos` config. Per class: the mean of "
             "a number, the share of yes of a flag, the clips with a text; each over the clips that have a value "
             "(their count in brackets).", ""]
    for source in sources:
        facts = specs[source].facts
        columns = facts.columns
        lines += [f"{md(source)}: from {md(facts.sheet)}, the row whose {md(facts.key_column)} is the clip's "
                  f"{md(str(facts.key))}.", "",
                  "| label | videos | " + " | ".join(f"{c.name} ({_FACT_WORDS[c.type]})" for c in columns) + " |",
                  "|---|---:|" + "---:|" * len(columns)]
        clips = [c for c in lock.clips if c.source == source]
        for label in sorted({c.label or "" for c in clips}):
            mine = [c for c in clips if (c.label or "") == label]
            cells = [_fact_summary([c.facts.get(col.name) for c in mine], col.type) for col in columns]
            lines.append(f"| {md(label)} | {len(mine)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


_FACT_WORDS = {"float": "mean", "int": "mean", "bool": "share of yes", "str": "with a text"}


def _fact_summary(values: list, kind: str) -> str:
    given = [v for v in values if v is not None]
    if not given:
        return "- (0)"
    if kind == "bool":
        return f"{sum(given) / len(given):.0%} ({len(given)})"
    if kind == "str":
        return str(len(given))
    return f"{sum(given) / len(given):.2f} ({len(given)})"


def _contact_sheet_section(lock: Lock) -> str:
    if CONTACT_SHEET not in lock.attachments:
        return ""
    return ("## Sample frames\n\n"
            "Up to 8 frames per source, one row per source, taken across its classes "
            "(the middle kept frame of each chosen video), as stored in the release.\n\n"
            f"![Sample frames per source]({CONTACT_SHEET})")


def _sampling_text(sampling: SamplingPolicy) -> str:
    parts = []
    if sampling.every_n is not None:
        parts.append(f"every {sampling.every_n}th frame")
    if sampling.rate_hz is not None:
        parts.append(f"about {sampling.rate_hz} frames per second (every int(fps/{sampling.rate_hz})-th frame)")
    if sampling.evenly is not None:
        parts.append(f"{sampling.evenly} frames spread evenly over the clip")
    if sampling.max_frames is not None:
        parts.append(f"at most {sampling.max_frames} a clip")
    return md(", ".join(parts))


def _crop_text(crop: CropSpec) -> str:
    text = {"auto": "the scanner's 2D tissue region where the file declares one, else the scan region "
                    "detected per clip", "none": "full frame"}.get(
        crop.mode, f"fixed box {md(list(crop.box or ()))} (x, y, w, h)")
    if crop.clips:
        text += f"; {plural(len(crop.clips), 'clip')} with a box of its own"
    return text


def split_rule_text(splits: Splits) -> str:
    """The recipe's split rule in words (the card and the benchmark record say the same), as
    plain text: whoever writes it into Markdown escapes it. The rule itself: `builder.splits`."""
    folds = isinstance(splits, Folds)
    where = "fold" if folds else "split"
    text = (f"{splits.k} folds by video" if folds
            else f"hold-out by video, {splits.validation:.0%} of each class's videos for validation (rounded to "
                 "whole videos so that the validation split holds that share of all videos)")
    text += (f", balanced by class: clips, and groups of clips, are dealt largest first, each to the {where} "
             f"that keeps every class closest to its share of each {where} (the least sum of squared differences), "
             "ties by content hash and seed")
    grouping = [("clips sharing near-duplicate frames" if splits.near_duplicates else None),
                (f"clips sharing their value of the sheet's {_columns(splits.group_column)}"
                 if splits.group_column else None)]
    grouping = [g for g in grouping if g]
    if grouping:
        text += "; whole groups (" + " or ".join(grouping) + ") go to one split"
    if splits.inherit:
        text += (f"; clips of {splits.inherit} keep their split unless that leaves a {where} without a class "
                 "or spreads a class wider than its largest group forces")
    return text


def _columns(column: str | tuple[str, ...]) -> str:
    return f"column {column!r}" if isinstance(column, str) else "columns " + " and ".join(repr(c) for c in column)


def _recipe_section(lock: Lock, sources: list[str]) -> str:
    recipe = lock.recipe
    rows = ["| source | sampling | crop |", "|---|---|---|"]
    for name in sources:
        spec = recipe.sources[name]
        rows.append(f"| {name} | {_sampling_text(spec.sampling)} | {_crop_text(spec.crop)} |")
    threshold = recipe.dedup_threshold
    dedup = (f"a kept frame whose mean absolute grey-level difference to the previous kept frame is "
             f"below {threshold} is dropped as a near-duplicate" if threshold > 0 else "no near-duplicate dropping")
    moved = sum(w.kind == WarningKind.SPLIT_MOVED for w in lock.warnings)
    previous = (f" Clips present in {md(lock.previous.name)} {md(lock.previous.version)} (lock sha256 "
                f"`{lock.previous.lock_sha256[:16]}…`) kept their split, but for {moved} that the groups or the "
                "balance by class moved (each a `split_moved` warning in `release.json`); new clips were dealt; "
                f"{plural(len(lock.previous.removed), 'clip')} of it {'is' if len(lock.previous.removed) == 1 else 'are'} "
                "gone (listed in `release.json`)."
                if lock.previous else "")
    return "\n".join([
        "## Recipe: sampling and cropping",
        "",
        *rows,
        "",
        f"- Splits: {md(split_rule_text(recipe.splits))}; seed {recipe.seed}.{previous}",
        f"- Near-duplicates: {dedup} ({lock.counts.duplicates_dropped} dropped).",
        f"- Storage: PNG (compression level {recipe.png_compress_level}), grey (mode L) unless "
        f"the clip carries colour; Parquet shards of at most {recipe.shard_max_bytes / 2**20:g} MB.",
        f"- Every frame records its clip's sha256, its index and time in the clip and its crop box; "
        f"the recipe's sha256 is `{lock.recipe_sha256}`.",
    ])


def _groups_section(lock: Lock) -> str:
    members: dict[str, list[str]] = defaultdict(list)
    for clip in lock.clips:
        if clip.group is not None:
            members[clip.group].append(f"{md(clip.video_id)} ({clip.split})")
    groups = {g: m for g, m in members.items() if len(m) > 1}
    if not groups:
        return ""
    lines = ["## Groups", "",
             f"{plural(len(groups), 'group')} of clips that the split rule keeps together (they share "
             "near-duplicate frames, or a value of the grouping column), each wholly in one split:", ""]
    lines += [f"- {', '.join(sorted(m))}" for _, m in sorted(groups.items(), key=lambda kv: sorted(kv[1]))]
    return "\n".join(lines)


_TEXT_WORDS = {"mask": "found boxes painted black in every released frame", "exclude": "clips with text left out",
               "warn": "text reported, left in the pixels", "off": "not checked"}


def _identity_section(lock: Lock, sources: list[str]) -> str:
    """What of a clip's identity can reach the release: names, header values, burned-in text."""
    specs = lock.recipe.sources
    rows = ["| source | input | video ids | burned-in text |", "|---|---|---|---|"]
    for name in sources:
        spec = specs[name]
        ids = ("content hash (no path, folder or file name is published)" if spec.ids == "hash"
               else "path relative to the source's folder")
        rows.append(f"| {md(name)} | {spec.input} | {ids} | {spec.text}: {_TEXT_WORDS[spec.text]} |")
    tally: dict[str | None, int] = defaultdict(int)
    for clip in lock.clips:
        tally[clip.text] += 1
    excluded = sum(f.stage == "text" for f in lock.failures)
    engine = lock.environment.bytes.get("rapidocr")
    checked = sum(c.text is not None and specs[c.source].text != "off" for c in lock.clips)  # off: the file's word only
    off = [s for s in sources if specs[s].text == "off"]
    if engine:
        check = (f"The text check ran rapidocr {engine} (its bundled detector, recorded with its model hashes in "
                 "`release.json`) on the first, middle and last kept frames of each clip, inside its crop: "
                 f"{checked} of {plural(len(lock.clips), 'clip')} checked; {tally['masked']} masked, "
                 f"{tally['warned']} with text left in (warn), {tally['declared']} declared burned-in text by their "
                 f"file but showed none inside the crop, {plural(excluded, 'clip')} excluded (failure ledger).")
    elif len(off) == len(sources):  # the detector is then no byte-shaping library: whether it was installed is unknown
        check = ("No text check ran: the recipe turns it off (`text: off`) for every source; only the file's own "
                 "word (DICOM Burned In Annotation) is recorded.")
    else:
        check = ("No text check ran where the recipe asks for one (`text: warn`): the text detector (us4[text]) was "
                 "not installed where this release was built.")
    if off and len(off) < len(sources):
        check += (f" The recipe turns the check off (`text: off`) for {', '.join(off)}: there only the file's own word "
                  "(DICOM Burned In Annotation) is recorded.")
    lines = ["## Identity: names, headers and burned-in text", "", *rows, "", check]
    if any(specs[s].input == "dicom" for s in sources):
        from ..media.dicom import allowed_table

        lines += ["", "DICOM files: only these attributes reach the release (the `attributes` column of the `videos` "
                  "config); names, IDs, dates, times, UIDs, institution, operator, device serials and private tags "
                  "never do.", "", allowed_table()]
    return "\n".join(lines)


def _ledger_section(lock: Lock) -> str:
    failures, excluded, warnings = lock.failures, lock.excluded, lock.warnings
    lines = ["## Failure ledger", "",
             f"{plural(len(failures), 'clip')} failed, {plural(len(excluded), 'file')} left out by the recipe, "
             f"{plural(len(warnings), 'warning')}, {plural(len(lock.sheet.missing), 'metadata-sheet row')} naming no file here, "
             f"{plural(len(lock.sheet.label_overrides), 'label')} taken from the sheet over the file name. "
             "Every entry, with its reason, is in `release.json`."]
    tables = (("Failed clips", [(f.source, str(f.stage), f"{f.video_id}: {f.reason}") for f in failures], "stage"),
              ("Left out by the recipe", [(e.source, e.reason, e.video_id) for e in excluded], "reason"),
              ("Warnings", [(w.source, str(w.kind), f"{w.video_id or w.source}: {w.message}") for w in warnings], "kind"))
    for heading, entries, key in tables:
        if not entries:
            continue
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for source, what, example in entries:
            groups[(source, what)].append(example)
        lines += ["", f"{heading}:", "", f"| source | {key} | clips | example |", "|---|---|---:|---|"]
        for (source, what), examples in sorted(groups.items()):
            lines.append(f"| {md(source)} | {md(what)} | {len(examples)} | {md(examples[0])} |")
    return "\n".join(lines)


def _benchmark_section(lock: Lock, read_attachment: ReadAttachment) -> str:
    if BENCHMARK not in lock.attachments:
        return ""
    try:
        section = benchmark_markdown(read_benchmark(read_attachment(BENCHMARK), BENCHMARK)).strip()
    except ReleaseError as exc:
        raise ReleaseError(f"{exc}; the release was left as it was") from None
    return (section + "\n\n"
            "Benchmark results are evidence about this release, not part of its data: they were attached "
            "after the build, and publishing them adds a commit whose data files are unchanged (see the "
            "repository's tags).")


def _licence_section(lock: Lock, sources: list[str]) -> str:
    lines = ["## Licences", "",
             "Frames are derived from the clips of each source; the source's terms apply to them. "
             "The `videos` config carries each clip's licence in its `licence` column.", ""]
    for name in sources:
        src = source_definition(lock, name)
        note = "" if src.public else " Not public: publish such a release only where its terms allow."
        lines.append(f"- **{md(name)}**: {md(src.licence)}.{note}")
    return "\n".join(lines)


def citation_keys(lock: Lock) -> list[str]:
    keys = ["uscl", *(source_definition(lock, s).citation for s in sorted(lock.recipe.sources))]
    if BENCHMARK in lock.attachments:
        keys.append(SOURCES["pocus"].citation)  # the benchmark evaluates on POCUS
    return [k for k in dict.fromkeys(keys) if k in CITATIONS]


def _citation_section(lock: Lock, sources: list[str]) -> str:
    blocks = [f"```bibtex\n{CITATIONS[k].bibtex}\n```" for k in citation_keys(lock)]
    return "## Citation\n\nThe method this corpus serves (USCL) and the sources of its clips:\n\n" + "\n\n".join(blocks)


def _provenance_section(lock: Lock) -> str:
    env = lock.environment
    n_in = len(lock.clips) + len(lock.failures)
    size = sum(c.bytes or 0 for c in lock.clips)
    lines = ["## Provenance", "",
             f"Built from {plural(n_in, 'clip')} ({len(lock.clips)} used, {size} bytes), each named with its sha256 in "
             f"`release.json`, into {plural(len(lock.shards), 'shard')}. `us4 verify` (or `us4 download`, which runs it) "
             "checks every file against that lock, this card and the Croissant file included (by the sha256 "
             "the lock records); rebuilding with the same clips, recipe and library versions gives the same bytes.",
             "", "| library (shapes the bytes) | version |", "|---|---|"]
    lines += [f"| {md(k)} | {md(v)} |" for k, v in sorted(env.bytes.items())]
    lines += ["", "Built on: " + ", ".join(f"{md(k)} {md(v)}" for k, v in sorted(env.host.items()))
              + " (information only)."]
    return "\n".join(lines)
