"""The Benchmark section of a release card, rendered from a benchmark.json record.

A pure function of the record, so the card generator can import it and a card can be
regenerated from the attached benchmark.json alone.
"""
from __future__ import annotations

from ..escape import markdown as md

_NAMES = {"uscl": "USCL (SPG + mixup)", "simclr_no_spg": "contrastive, no SPG (SimCLR-style)",
          "random": "random initialisation", "imagenet": "ImageNet (user weights)"}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _name(key: str, result: dict | None = None) -> str:
    return md(_NAMES.get(key, key)) + (" **(leaked)**" if result and result.get("leaked") else "")


def _disjointness(record: dict) -> list[str]:
    """The cross-release audit's statement, loud when the releases share frames (absent from older records)."""
    audit = record["pretraining"].get("audit")
    if not audit:
        return []
    if audit["status"] == "leaked":
        return ["", f"**{md(audit['statement'])}.** Pretrained rows below are marked (leaked)."]
    return ["", md(audit["statement"][0].upper() + audit["statement"][1:]) + "."]


def _class_counts(record: dict) -> list[str]:
    """Videos (frames) of each class per evaluation fold, and the folds that lack a class."""
    counts = record["evaluation"].get("class_counts")
    if not counts:
        return []
    n = len(record["evaluation"]["folds"])
    lines = ["", "Evaluation videos (frames) per class and fold:", "",
             "| class | " + " | ".join(f"fold {k}" for k in range(n)) + " |", "|---|" + "---|" * n]
    for name, videos in counts["videos"].items():
        lines.append(f"| {md(name)} | " + " | ".join(f"{v} ({f})" for v, f in zip(videos, counts["frames"][name]))
                     + " |")
    for warning in counts["warnings"]:
        lines += ["", f"**Warning:** {md(warning)}."]
    return lines


def benchmark_markdown(record: dict) -> str:
    """Markdown of the card's Benchmark section: figures per initialisation, per class, and how
    they were made. Every string of the record is escaped (an attachment is data like any other)."""
    cfg, results = record["config"], record["results"]
    rel = record["releases"]
    classes = record["evaluation"]["classes"]
    lines = [
        "## Benchmark",
        "",
        (f"POCUS fine-tuning of a ResNet-18 pretrained on **{md(rel['pretrain']['name'])} "
         f"{md(rel['pretrain']['version'])}**, evaluated on **{md(rel['eval']['name'])} {md(rel['eval']['version'])}** "
         f"over {len(record['evaluation']['folds'])} video-level folds (config {md(cfg['name'])}: "
         f"{md(cfg['input_size'])} px, {md(cfg['pretrain']['epochs'])} pretraining epochs, "
         f"{md(cfg['finetune']['epochs'])} fine-tuning epochs; device {md(record['device']['type'])}; "
         f"{record['wall_s']['total']:.0f} s in all)."),
        *_disjointness(record),
        "",
        ("| initialisation | accuracy (honest: final epoch) | per-fold mean ± std | macro F1 (honest) "
         "| accuracy (optimistic: best test epoch, reference protocol) |"),
        "|---|---|---|---|---|",
    ]
    for key, r in results.items():
        h, o = r["honest"], r["optimistic"]
        lines.append(f"| {_name(key, r)} | {_pct(h['accuracy'])} | {_pct(h['accuracy_mean'])} ± "
                     f"{100 * h['accuracy_std']:.1f} | {h['macro_f1']:.3f} | {_pct(o['accuracy'])} |")
    lines += ["", "Per class (honest figure; precision / recall / F1):", "",
              "| initialisation | " + " | ".join(map(md, classes)) + " |", "|---|" + "---|" * len(classes)]
    for key, r in results.items():
        pc = r["honest"]["per_class"]
        cells = [f"{pc[c]['precision']:.2f} / {pc[c]['recall']:.2f} / {pc[c]['f1']:.2f}" for c in classes]
        lines.append(f"| {_name(key)} | " + " | ".join(cells) + " |")
    order = md(", ".join(classes))
    lines += ["", f"Summed confusion matrices (honest; rows true, columns predicted, order {order}):", ""]
    for key, r in results.items():
        lines.append(f"- {_name(key)}: {md(r['honest']['confusion_matrix'])}")
    comparison = record.get("comparison")  # absent from records written before it existed
    if comparison:
        paper = comparison["published_setting"]
        lines += ["", f"Beside the published figures (their setting: {md(paper['input_size'])} px, "
                  f"{md(paper['pretraining'])}, pretrained on {md(paper['pretraining_corpus'])}):", "",
                  "| initialisation | published | this run (optimistic, the same protocol) |", "|---|---|---|"]
        for f in comparison["published"]:
            about = "about " if f["approximate"] else ""
            lines.append(f"| {_name(f['initialisation'])} | {about}{_pct(f['accuracy'])} "
                         f"| {_pct(f['this_run_optimistic'])} |")
        lines += ["", "This run differs from the paper's setting in: " + md("; ".join(comparison["differences"])) + "."]
    pre = record["pretraining"]
    lines += [
        "",
        ("The optimistic column picks, per fold, the epoch with the best accuracy on that fold's test "
         "videos, as the USCL reference does; it is comparable with published figures but not an unbiased "
         "estimate. The honest column takes the final epoch and chooses nothing on test data."),
        "",
        (f"Pretraining: {md(pre['videos']['train'])} training and {md(pre['videos']['validation'])} validation "
         f"videos ({md(pre['holdout'])}); "
         + (f"loss {md(pre['loss'])}; " if "loss" in pre else "")
         + f"semi-supervised labels from {md(pre['label_source'])}, "
         f"{md(pre['labelled_videos'])} labelled training videos. {md(pre['note'][0].upper() + pre['note'][1:])}."),
        *_class_counts(record),
        "",
        (f"Lock sha256: pretrain {md(rel['pretrain']['lock_sha256'][:16])}…, "
         f"eval {md(rel['eval']['lock_sha256'][:16])}…; "
         f"us4 {md(record['code']['us4'])}, seed {md(record['seeds']['base'])}."),
        "",
    ]
    if "split_rule" in rel["eval"]:  # records written before these fields existed render without them
        lines[-1:-1] = ["", f"Evaluation folds: {md(rel['eval']['split_rule'])}. Both releases were verified against "
                            f"their locks before the first step ({md(rel['pretrain']['verified']['files'])} and "
                            f"{md(rel['eval']['verified']['files'])} files)."]
    for side in ("pretrain", "eval"):
        if rel[side].get("phantom"):
            lines[-1:-1] = ["", f"The {side} release is a PHANTOM (synthetic clips): these figures say nothing about "
                                "real data."]
    return "\n".join(lines)
