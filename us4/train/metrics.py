"""Classification figures from confusion matrices (rows: true class, columns: predicted)."""
from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 0.0


def per_class(cm: np.ndarray, class_names: list[str] | tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 per class; 0 where a ratio has an empty denominator."""
    out = {}
    for k, name in enumerate(class_names):
        tp = float(cm[k, k])
        predicted, actual = float(cm[:, k].sum()), float(cm[k, :].sum())
        p = tp / predicted if predicted else 0.0
        r = tp / actual if actual else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        out[name] = {"precision": p, "recall": r, "f1": f1, "support": int(actual)}
    return out


def summarize(fold_confusions: list[np.ndarray], class_names: list[str] | tuple[str, ...]) -> dict:
    """Summed confusion matrix and its figures, plus per-fold accuracy with mean and std over folds."""
    total = np.sum(fold_confusions, axis=0)
    fold_acc = [accuracy(cm) for cm in fold_confusions]
    pc = per_class(total, class_names)
    return {
        "accuracy": accuracy(total),  # over all test frames of all folds (summed confusion matrix)
        "accuracy_mean": float(np.mean(fold_acc)),
        "accuracy_std": float(np.std(fold_acc)),  # population std over folds
        "fold_accuracy": fold_acc,
        "macro_f1": float(np.mean([v["f1"] for v in pc.values()])),
        "per_class": pc,
        "confusion_matrix": total.tolist(),
        "fold_confusion_matrices": [cm.tolist() for cm in fold_confusions],
    }
