"""PNG plots of a benchmark record (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..contract.benchmark import BenchmarkRecord


def write_plots(record: BenchmarkRecord, out: str | Path) -> list[Path]:
    """pretrain_loss.png, fold_accuracy.png, finetune_curves.png; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    written = []

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, v in record.pretraining.variants.items():
        epochs = [h.epoch + 1 for h in v.history]
        (line,) = axes[0].plot(epochs, [np.nan if h.loss is None else h.loss for h in v.history], label=key)
        axes[1].plot(epochs, [np.nan if h.val_loss is None else h.val_loss for h in v.history], label=key,
                     color=line.get_color())
        if v.best_val_loss is not None:
            axes[1].scatter([v.best_epoch + 1], [v.best_val_loss], marker="*", s=80, color=line.get_color())
    axes[0].set(title=f"pretraining loss ({record.pretraining.loss})", xlabel="epoch")
    axes[1].set(title="validation NT-Xent (star: selected)", xlabel="epoch")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    written.append(out / "pretrain_loss.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    results = record.results
    keys = list(results)
    n_folds = len(record.evaluation.folds)
    width = 0.8 / max(len(keys), 1)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for i, key in enumerate(keys):
        x = np.arange(n_folds) + (i - (len(keys) - 1) / 2) * width
        ax.bar(x, results[key].honest.fold_accuracy, width, label=f"{key} (honest)")
        ax.scatter(x, results[key].optimistic.fold_accuracy, marker="_", s=200, color="black",
                   label="optimistic (best epoch)" if i == 0 else None)
    ax.set_xticks(range(n_folds), [f"fold {k}" for k in range(n_folds)])
    ax.set(ylim=(0, 1), ylabel="test accuracy", title="POCUS accuracy per fold")
    # beside the axes, not over them: bars reach any height from 0 to 1
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    written.append(out / "fold_accuracy.png")
    fig.savefig(written[-1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key in keys:
        curves = np.array(results[key].curves.test_accuracy, dtype=float)
        ax.plot(np.arange(1, curves.shape[1] + 1), curves.mean(axis=0), label=key)
    ax.set(xlabel="fine-tuning epoch", ylabel="mean test accuracy over folds", ylim=(0, 1),
           title="fine-tuning curves")
    ax.legend()
    fig.tight_layout()
    written.append(out / "finetune_curves.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written
