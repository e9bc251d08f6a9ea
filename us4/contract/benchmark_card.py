"""The Benchmark section of a release card, rendered from a benchmark record.

A pure function of the record (`contract.benchmark.BenchmarkRecord`), so the card generator
can import it and a card can be regenerated from the attached benchmark.json alone. Parts a
record of an earlier us4 lacks (None) are left out.
"""
from __future__ import annotations

from ..escape import markdown as md
from .benchmark import BenchmarkRecord, Result

_NAMES = {"uscl": "USCL (SPG + mixup)", "simclr_no_spg": "contrastive, no SPG (SimCLR-style)",
          "random": "random initialisation", "imagenet": "ImageNet (user weights)"}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _name(key: str, result: Result | None = None) -> str:
    return md(_NAMES.get(key, key)) + (" **(leaked)**" if result and result.leaked else "")


def _sentence(text: str) -> str:
    return md(text[0].upper() + text[1:])


def _disjointness(record: BenchmarkRecord) -> list[str]:
    """The cross-release audit's statement, loud when the releases share frames."""
    audit = record.pretraining.audit
    if audit is None:
        return []
    where = " (the audit of an earlier run of these two releases, read from the frame cache folder)" \
        if audit.reused else ""
    if audit.status == "leaked":
        return ["", f"**{md(audit.statement)}.**{where} Pretrained rows below are marked (leaked)."]
    return ["", _sentence(audit.statement) + f".{where}"]


def _class_counts(record: BenchmarkRecord) -> list[str]:
    """Videos (frames) of each class per evaluation fold, and the folds that lack a class."""
    counts = record.evaluation.class_counts
    if counts is None:
        return []
    n = len(record.evaluation.folds)
    lines = ["", "Evaluation videos (frames) per class and fold:", "",
             "| class | " + " | ".join(f"fold {k}" for k in range(n)) + " |", "|---|" + "---|" * n]
    for name, videos in counts.videos.items():
        lines.append(f"| {md(name)} | " + " | ".join(f"{v} ({f})" for v, f in zip(videos, counts.frames[name]))
                     + " |")
    for warning in counts.warnings:
        lines += ["", f"**Warning:** {md(warning)}."]
    return lines


def benchmark_markdown(record: BenchmarkRecord) -> str:
    """Markdown of the card's Benchmark section: figures per initialisation, per class, and how
    they were made. Every string of the record is escaped (an attachment is data like any other)."""
    cfg, results = record.config, record.results
    pre_rel, ev_rel = record.releases.pretrain, record.releases.eval
    classes = record.evaluation.classes
    lines = [
        "## Benchmark",
        "",
        (f"POCUS fine-tuning of a ResNet-18 pretrained on **{md(pre_rel.name)} {md(pre_rel.version)}**, "
         f"evaluated on **{md(ev_rel.name)} {md(ev_rel.version)}** "
         f"over {len(record.evaluation.folds)} video-level folds (config {md(cfg.name)}: "
         f"{md(cfg.input_size)} px, {md(cfg.pretrain.epochs)} pretraining epochs, "
         f"{md(cfg.finetune.epochs)} fine-tuning epochs; device {md(record.device.type)}; "
         f"{record.wall_s.total:.0f} s in all)."),
        *_disjointness(record),
        "",
        ("| initialisation | accuracy (honest: final epoch) | per-fold mean ± std | macro F1 (honest) "
         "| accuracy (optimistic: best test epoch, reference protocol) |"),
        "|---|---|---|---|---|",
    ]
    for key, r in results.items():
        h, o = r.honest, r.optimistic
        lines.append(f"| {_name(key, r)} | {_pct(h.accuracy)} | {_pct(h.accuracy_mean)} ± "
                     f"{100 * h.accuracy_std:.1f} | {h.macro_f1:.3f} | {_pct(o.accuracy)} |")
    lines += ["", "Per class (honest figure; precision / recall / F1):", "",
              "| initialisation | " + " | ".join(map(md, classes)) + " |", "|---|" + "---|" * len(classes)]
    for key, r in results.items():
        pc = r.honest.per_class
        cells = [f"{pc[c].precision:.2f} / {pc[c].recall:.2f} / {pc[c].f1:.2f}" for c in classes]
        lines.append(f"| {_name(key)} | " + " | ".join(cells) + " |")
    order = md(", ".join(classes))
    lines += ["", f"Summed confusion matrices (honest; rows true, columns predicted, order {order}):", ""]
    for key, r in results.items():
        lines.append(f"- {_name(key)}: {md(r.honest.confusion_matrix)}")
    comparison = record.comparison
    if comparison is not None:
        paper = comparison.published_setting
        lines += ["", f"Beside the published figures (their setting: {md(paper.input_size)} px, "
                  f"{md(paper.pretraining)}, pretrained on {md(paper.pretraining_corpus)}):", "",
                  "| initialisation | published | this run (optimistic, the same protocol) |", "|---|---|---|"]
        for f in comparison.published:
            about = "about " if f.approximate else ""
            lines.append(f"| {_name(f.initialisation)} | {about}{_pct(f.accuracy)} "
                         f"| {_pct(f.this_run_optimistic)} |")
        lines += ["", "This run differs from the paper's setting in: " + md("; ".join(comparison.differences)) + "."]
    pre = record.pretraining
    lines += [
        "",
        ("The optimistic column picks, per fold, the epoch with the best accuracy on that fold's test "
         "videos, as the USCL reference does; it is comparable with published figures but not an unbiased "
         "estimate. The honest column takes the final epoch and chooses nothing on test data."),
        "",
        (f"Pretraining: {md(pre.videos.train)} training and {md(pre.videos.validation)} validation "
         f"videos ({md(pre.holdout)}); "
         + (f"loss {md(pre.loss)}; " if pre.loss is not None else "")
         + f"semi-supervised labels from {md(pre.label_source)}, "
         f"{md(pre.labelled_videos)} labelled training videos. {_sentence(pre.note)}."),
        *_class_counts(record),
        "",
        (f"Lock sha256: pretrain {md(pre_rel.lock_sha256[:16])}…, eval {md(ev_rel.lock_sha256[:16])}…; "
         f"us4 {md(record.code.us4)}, seed {md(record.seeds.base)}."),
        "",
    ]
    if ev_rel.split_rule is not None and pre_rel.verified is not None and ev_rel.verified is not None:
        lines[-1:-1] = ["", f"Evaluation folds: {md(ev_rel.split_rule)}. Both releases were verified against "
                            f"their locks before the first step ({md(pre_rel.verified.files)} and "
                            f"{md(ev_rel.verified.files)} files)."]
    for side, used in (("pretrain", pre_rel), ("eval", ev_rel)):
        if used.phantom:
            lines[-1:-1] = ["", f"The {side} release is a PHANTOM (synthetic clips): these figures say nothing about "
                                "real data."]
    return "\n".join(lines)
