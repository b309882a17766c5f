"""Task metrics from logits and labels. Pure numpy, so they are unit-testable on tiny arrays.

Perplexity follows docs/DESIGN_NOTES.md: exp(mean cross-entropy) of the classifier on the split, which
is what the paper reports for its classifiers (2.0 = as unsure as a coin flip on 2 classes).
"""

from __future__ import annotations

import math

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return np.asarray(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float((pred == labels).mean()) if len(labels) else 0.0


def macro_f1(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    scores = []
    for c in range(num_classes):
        tp = int(((pred == c) & (labels == c)).sum())
        fp = int(((pred == c) & (labels != c)).sum())
        fn = int(((pred != c) & (labels == c)).sum())
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    if not len(labels):
        return 0.0
    lp = log_softmax(logits.astype(np.float64))
    return float(-lp[np.arange(len(labels)), labels].mean())


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """accuracy, macro_f1, loss (mean CE) and perplexity = exp(loss)."""
    pred = logits.argmax(axis=1)
    loss = cross_entropy(logits, labels)
    return {
        "accuracy": accuracy(pred, labels),
        "macro_f1": macro_f1(pred, labels, logits.shape[1]),
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
    }
