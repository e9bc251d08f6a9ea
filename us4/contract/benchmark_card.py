"""The Benchmark section of a release card, rendered from a benchmark.json record.

A pure function of the record, so the card generator can import it and a card can be
regenerated from the attached benchmark.json alone.
"""
from __future__ import annotations

_NAMES = {"uscl": "USCL (SPG + mixup)", "simclr_no_spg": "contrastive, no SPG (SimCLR-style)",
          "random": "random initialisation", "imagenet": "ImageNet (user weights)"}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def benchmark_markdown(record: dict) -> str:
    """Markdown of the card's Benchmark section: figures per initialisation, per class, and how they were made."""
    cfg, results = record["config"], record["results"]
    rel = record["releases"]
    classes = record["evaluation"]["classes"]
    lines = [
        "## Benchmark",
        "",
        (f"POCUS fine-tuning of a ResNet-18 pretrained on **{rel['pretrain']['name']} {rel['pretrain']['version']}**, "
         f"evaluated on **{rel['eval']['name']} {rel['eval']['version']}** over {len(record['evaluation']['folds'])} "
         f"video-level folds (config `{cfg['name']}`: {cfg['input_size']} px, {cfg['pretrain']['epochs']} pretraining "
         f"epochs, {cfg['finetune']['epochs']} fine-tuning epochs; device {record['device']['type']}; "
         f"{record['wall_s']['total']:.0f} s in all)."),
        "",
        ("| initialisation | accuracy (honest: final epoch) | per-fold mean ± std | macro F1 (honest) "
         "| accuracy (optimistic: best test epoch, reference protocol) |"),
        "|---|---|---|---|---|",
    ]
    for key, r in results.items():
        h, o = r["honest"], r["optimistic"]
        lines.append(f"| {_NAMES.get(key, key)} | {_pct(h['accuracy'])} | {_pct(h['accuracy_mean'])} ± "
                     f"{100 * h['accuracy_std']:.1f} | {h['macro_f1']:.3f} | {_pct(o['accuracy'])} |")
    lines += ["", "Per class (honest figure; precision / recall / F1):", "",
              "| initialisation | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for key, r in results.items():
        pc = r["honest"]["per_class"]
        cells = [f"{pc[c]['precision']:.2f} / {pc[c]['recall']:.2f} / {pc[c]['f1']:.2f}" for c in classes]
        lines.append(f"| {_NAMES.get(key, key)} | " + " | ".join(cells) + " |")
    order = ", ".join(classes)
    lines += ["", f"Summed confusion matrices (honest; rows true, columns predicted, order {order}):", ""]
    for key, r in results.items():
        lines.append(f"- {_NAMES.get(key, key)}: `{r['honest']['confusion_matrix']}`")
    comparison = record.get("comparison")  # absent from records written before it existed
    if comparison:
        paper = comparison["published_setting"]
        lines += ["", f"Beside the published figures (their setting: {paper['input_size']} px, {paper['pretraining']}, "
                  f"pretrained on {paper['pretraining_corpus']}):", "",
                  "| initialisation | published | this run (optimistic, the same protocol) |", "|---|---|---|"]
        for f in comparison["published"]:
            about = "about " if f["approximate"] else ""
            lines.append(f"| {_NAMES.get(f['initialisation'], f['initialisation'])} | {about}{_pct(f['accuracy'])} "
                         f"| {_pct(f['this_run_optimistic'])} |")
        lines += ["", "This run differs from the paper's setting in: " + "; ".join(comparison["differences"]) + "."]
    pre = record["pretraining"]
    lines += [
        "",
        ("The optimistic column picks, per fold, the epoch with the best accuracy on that fold's test "
         "videos, as the USCL reference does; it is comparable with published figures but not an unbiased "
         "estimate. The honest column takes the final epoch and chooses nothing on test data."),
        "",
        (f"Pretraining: {pre['videos']['train']} training and {pre['videos']['validation']} validation videos "
         f"({pre['holdout']}); semi-supervised labels from `{pre['label_source']}`, "
         f"{pre['labelled_videos']} labelled training videos. {pre['note'][0].upper() + pre['note'][1:]}."),
        "",
        (f"Lock sha256: pretrain `{rel['pretrain']['lock_sha256'][:16]}…`, eval `{rel['eval']['lock_sha256'][:16]}…`; "
         f"us4 {record['code']['us4']}, seed {record['seeds']['base']}."),
        "",
    ]
    if "split_rule" in rel["eval"]:  # records written before these fields existed render without them
        lines[-1:-1] = ["", f"Evaluation folds: {rel['eval']['split_rule']}. Both releases were verified against their "
                            f"locks before the first step ({rel['pretrain']['verified']['files']} and "
                            f"{rel['eval']['verified']['files']} files)."]
    for side in ("pretrain", "eval"):
        if rel[side].get("phantom"):
            lines[-1:-1] = ["", f"The {side} release is a PHANTOM (synthetic clips): these figures say nothing about "
                                "real data."]
    return "\n".join(lines)
