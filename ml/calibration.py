"""How far a model's confidence can be trusted: the expected calibration error and its reliability bins
(torchmetrics' binning, 15 equal-width bins of the top-1 probability), and temperature scaling (Guo et al.
2017, "On Calibration of Modern Neural Networks"): one scalar T, fitted by LBFGS on the negative log
likelihood of held-out logits, that divides the logits before the softmax.

T is fitted on the validation split when the run held one out, and only then applied (`/predict?
calibrated=true`); without one, the T the test set would give is reported, marked not applied: fitted on
the images that also measure it, its "after" figure would flatter it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

N_BINS = 15  # Guo et al.'s and torchmetrics' default: equal-width bins of the top-1 probability
DIGITS = 6  # figures kept in metrics.json
LBFGS_STEPS = 100  # iterations of the temperature fit; it converges in under 20 on 10,000 images
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0  # a T outside these is a broken fit, not a calibration


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature` in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    result: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return result


def reliability(probabilities: np.ndarray, labels: np.ndarray, *, set_name: str) -> dict[str, Any]:
    """`{"set", "ece", "bins": [{"lower", "upper", "count", "confidence", "accuracy"}]}`: the expected
    calibration error (L1, torchmetrics') and, per bin of the top-1 probability, how many images fell in
    it, their mean confidence and their accuracy (null for an empty bin)."""
    probs = torch.as_tensor(probabilities, dtype=torch.float32)
    target = torch.as_tensor(labels, dtype=torch.long)
    ece = float(multiclass_calibration_error(probs, target, num_classes=probs.shape[1], n_bins=N_BINS, norm="l1"))
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == target).float()
    edges = torch.linspace(0, 1, N_BINS + 1)
    # torchmetrics' bucketing: right-closed bins, a confidence of exactly 1 in the last one
    index = (torch.bucketize(confidence, edges, right=True) - 1).clamp(max=N_BINS - 1)
    bins = []
    for b in range(N_BINS):
        mask = index == b
        count = int(mask.sum())
        bins.append(
            {
                "lower": round(float(edges[b]), DIGITS),
                "upper": round(float(edges[b + 1]), DIGITS),
                "count": count,
                "confidence": round(float(confidence[mask].mean()), DIGITS) if count else None,
                "accuracy": round(float(correct[mask].mean()), DIGITS) if count else None,
            }
        )
    return {"set": set_name, "ece": round(ece, DIGITS), "bins": bins}


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimizes the mean negative log likelihood of softmax(logits / T): LBFGS on log T
    (positive by construction), from T = 1."""
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    if len(z) == 0:
        raise ValueError("cannot fit a temperature on no images")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=LBFGS_STEPS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    with torch.enable_grad():
        optimizer.step(closure)  # type: ignore[no-untyped-call]
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature):
        raise FloatingPointError(f"the temperature fit diverged (T={temperature})")
    return min(max(temperature, MIN_TEMPERATURE), MAX_TEMPERATURE)


def calibration(
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """metrics.json's `calibration`: the test set's reliability (`set`, `ece`, `bins`), the validation
    split's (`validation`, null without one), the `temperature` ({"value", "applied", "fitted_on"}) and
    the test set's reliability after dividing the logits by it (`calibrated`)."""
    fitted_on = "validation" if validation is not None else "test"
    fit_logits, fit_labels = validation if validation is not None else (test_logits, test_labels)
    temperature = fit_temperature(fit_logits, fit_labels)
    return reliability(softmax(test_logits), test_labels, set_name="test") | {
        "validation": None
        if validation is None
        else reliability(softmax(validation[0]), validation[1], set_name="validation"),
        "temperature": {
            "value": round(temperature, DIGITS),
            "applied": validation is not None,
            "fitted_on": fitted_on,
        },
        "calibrated": reliability(softmax(test_logits, temperature), test_labels, set_name="test"),
    }


def applied_temperature(manifest: dict[str, Any]) -> tuple[float | None, str]:
    """The temperature a checkpoint's predictions may be divided by, or None and why there is none."""
    fitted = manifest.get("temperature")
    if fitted is None:
        return None, "it was saved before temperatures were fitted"
    if not fitted["applied"]:
        return None, (
            "its run held out no validation split (validation_split 0), and a temperature fitted on the test "
            f"set (T={fitted['value']:.3g}) is not applied; train with validation_split > 0"
        )
    return float(fitted["value"]), ""
