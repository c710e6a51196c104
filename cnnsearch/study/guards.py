"""Guards for short budgets: how many images a study validates on by default, and whether ASHA's rungs can judge its trials.

Both rest on one figure, :data:`RESOLVING`: the validation images that measure an
accuracy to within :data:`RESOLUTION` (95% interval, at the widest, an accuracy of 50%).
:func:`resolve <cnnsearch.study.settings.resolve>` applies them once the split is known,
and each says in one line what it chose. Pure functions: no data, no Ray, no Optuna.
"""

from __future__ import annotations

import math

__all__ = ["GRACE", "REDUCTION", "RESOLUTION", "RESOLVING", "asha_objection", "default_val_subset", "half_width", "val_subset_note"]

Z95 = 1.96  # the normal quantile of a two-sided 95% interval
# The accuracy difference a study's validation should tell apart. 1 point would take 9,604
# images, more than CIFAR-10's default validation split (5,000), so that no study on it could
# use ASHA; 2 points take 2,401, which it holds twice.
RESOLUTION = 0.02
RESOLVING = math.ceil(Z95**2 * 0.25 / RESOLUTION**2)  # 2,401 images: 1.96 * sqrt(0.5 * 0.5 / n) <= 0.02
GRACE = 1  # ASHA's first rung, in epochs
REDUCTION = 3  # ASHA's reduction factor: each rung keeps the top third, which trains 3 times as long to the next


def half_width(images: int, accuracy: float = 0.5) -> float:
    """Half the width of the 95% (normal) interval of an accuracy measured on ``images`` images; widest at 0.5."""
    return Z95 * math.sqrt(accuracy * (1 - accuracy) / images)


def default_val_subset(train_images: int, val_images: int) -> int | None:
    """How many validation images a new study validates on when neither its space nor ``--val-subset`` says: None for all.

    Where the validation split is larger than the training subset, a short trial's epoch
    spends more time validating than it is worth: per image a forward pass costs about a
    third of a training step (no backward pass), so 4,500 validation images cost half as
    much as training on 3,000 (finding 3 of issue 31 saw such epochs run at 14-27 img/s). So
    the default validates on as many images as the trials train on, but never on fewer
    than :data:`RESOLVING`, where the interval of one accuracy would be wider than
    ±:data:`RESOLUTION`.
    """
    if val_images <= train_images:
        return None
    sample = max(train_images, RESOLVING)
    return sample if sample < val_images else None


def val_subset_note(sample: int, train_images: int, val_images: int) -> str:
    """The line that says what :func:`default_val_subset` chose, and how to choose otherwise."""
    return (f"validating trials on {sample:,} of the {val_images:,} validation images, a seeded sample (the same on resume): "
            f"no more than the {train_images:,} they train on, so that validating does not outweigh training, and at least "
            f"{RESOLVING:,}, which measure an accuracy to ±{RESOLUTION * 100:.0f} points (95%); --val-subset N sets another number")


def asha_objection(epochs: int, val_images: int) -> str | None:
    """Why ASHA's rungs cannot judge trials of ``epochs`` epochs validated on ``val_images`` images; None where they can.

    Two conditions, one per thing a rung needs. (1) Room: successive halving judges a trial
    at a rung so that the trials it keeps train :data:`REDUCTION` times as long before the
    next (Jamieson & Talwalkar 2016; Li et al., ASHA, MLSys 2020). Below ``GRACE *
    REDUCTION`` epochs no rung has that room; Ray Tune would still put one at epoch
    :data:`GRACE`, and finding 3 of issue 31 saw it stop a trial after 1 epoch of 2. (2)
    Resolution: a rung keeps the trials above a quantile of its accuracies, whatever their
    gap; where one accuracy's interval is wider than ±:data:`RESOLUTION` (fewer than
    :data:`RESOLVING` images), the cut falls within the noise. How much a trial would gain
    between rungs is not known before it trains, so the rule asks only what can be known.
    """
    if epochs < GRACE * REDUCTION:
        return (f"with {epochs} epochs a trial, no rung of ASHA has room: a trial judged at epoch {GRACE} should be able to "
                f"train {REDUCTION} times as long, to epoch {GRACE * REDUCTION}, if it passes")
    if val_images < RESOLVING:
        return (f"{val_images:,} validation images measure an accuracy only to ±{half_width(val_images) * 100:.1f} points (95%), "
                f"and ASHA's rungs would stop trials on gaps within that; {RESOLVING:,} measure it to ±{RESOLUTION * 100:.0f}")
    return None
