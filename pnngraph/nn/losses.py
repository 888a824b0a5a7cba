"""Losses: the value and the gradient with respect to the model's output, in one function.

A loss sees one shard of a global batch of ``n_global`` samples and returns the *sum* of its
per-sample losses divided by ``n_global``, with the matching gradient. Summing these over shards
gives the global mean loss and its gradient, whatever the shard sizes::

    value_and_grad(xp, outputs, targets, n_global) -> (loss, doutputs)

``loss`` is a 0-d array of the backend (no host synchronisation inside a step).

>>> import numpy as np
>>> from pnngraph.nn.backend import get_backend
>>> xp = get_backend("numpy").xp
>>> loss, grad = SoftmaxCrossEntropy().value_and_grad(xp, np.zeros((2, 4)), np.array([0, 3]), 2)
>>> round(float(loss), 6) == round(float(np.log(4)), 6)
True
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from pnngraph.exceptions import ConfigError, DataError, check_name
from pnngraph.nn.backend import Array, device_of


class Loss:
    """Base of the losses: ``value_and_grad`` and the check of targets at the boundary."""

    name: ClassVar[str] = "loss"
    task: ClassVar[str] = "classification"

    def value_and_grad(
        self, xp: Any, outputs: Array, targets: Array, n_global: int
    ) -> tuple[Array, Array]:
        raise NotImplementedError

    def check_targets(self, y: np.ndarray, output_shape: tuple[int, ...],
                      first: int = 0) -> np.ndarray:
        """Validate host targets for a model with per-sample ``output_shape``; return them cast.
        Messages count samples from ``first`` (the index of ``y[0]`` in its data set: ``y`` may
        be one block of a dask array)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def softmax_cross_entropy(
    xp: Any, logits: Array, labels: Array, n_global: int, smoothing: float = 0.0
) -> tuple[Array, Array]:
    """Mean-over-``n_global`` softmax cross-entropy of integer ``labels`` and its logit gradient.

    Shifting each row by its maximum makes it exact for any finite logits: a constant added to
    every logit changes neither value nor gradient. With label ``smoothing`` = e the target of a
    sample is ``(1 - e) * onehot + e / classes`` (Szegedy et al., 2016); its entries sum to 1, so
    the loss is ``logsumexp(z) - sum(target * z)`` and the gradient ``softmax(z) - target``.
    """
    n, c = logits.shape
    z = logits - xp.max(logits, axis=1, keepdims=True)
    ez = xp.exp(z)
    total = xp.sum(ez, axis=1, keepdims=True)
    onehot = xp.astype(
        xp.reshape(labels, (n, 1)) == xp.reshape(xp.arange(c, device=device_of(logits)), (1, c)),
        logits.dtype,
    )
    if smoothing:
        onehot = onehot * (1.0 - smoothing) + smoothing / c
    per_sample = xp.log(total) - xp.sum(onehot * z, axis=1, keepdims=True)
    loss = xp.sum(per_sample) / n_global
    grad = (ez / total - onehot) / n_global
    return loss, grad


def mean_squared_error(
    xp: Any, outputs: Array, targets: Array, n_global: int
) -> tuple[Array, Array]:
    """Sum of squared errors over output features, averaged over ``n_global`` samples.

    Per sample the loss is ``0.5 * sum((y - t)**2)``, so its gradient is ``y - t``.
    """
    diff = outputs - xp.reshape(targets, outputs.shape)
    return 0.5 * xp.sum(diff * diff) / n_global, diff / n_global


class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy against integer class labels (numerically stable).

    Outputs of per-sample shape ``(T, classes)`` (a language model's) take labels ``(n, T)``:
    the loss is the mean over every sample and position, sum / (n_global * T).

    Targets may also come one-hot, shape ``(n, classes)``: :meth:`check_targets` turns them
    into class labels once, at the boundary, so every trainer sees the same labels.
    ``label_smoothing`` in [0, 1) mixes each target with the uniform distribution.

    >>> SoftmaxCrossEntropy(label_smoothing=0.1)
    SoftmaxCrossEntropy(label_smoothing=0.1)
    """

    name = "cross_entropy"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        v = label_smoothing
        if not (isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= v < 1.0):
            raise ConfigError("label_smoothing", "a number in [0, 1)", v)
        self.label_smoothing = float(v)

    def value_and_grad(
        self, xp: Any, outputs: Array, targets: Array, n_global: int
    ) -> tuple[Array, Array]:
        if outputs.ndim == 2:
            return softmax_cross_entropy(xp, outputs, targets, n_global, self.label_smoothing)
        # a class per position: the mean over every (sample, position) of the global batch
        positions = math.prod(outputs.shape[1:-1])
        loss, grad = softmax_cross_entropy(
            xp, xp.reshape(outputs, (-1, outputs.shape[-1])), xp.reshape(targets, (-1,)),
            n_global * positions, self.label_smoothing)
        return loss, xp.reshape(grad, outputs.shape)

    def __repr__(self) -> str:  # the default's repr is the one recorded before the option
        if self.label_smoothing:
            return f"{type(self).__name__}(label_smoothing={self.label_smoothing!r})"
        return f"{type(self).__name__}()"

    def check_targets(self, y: np.ndarray, output_shape: tuple[int, ...],
                      first: int = 0) -> np.ndarray:
        if not output_shape:
            raise DataError("model output", "cross-entropy needs (classes,) or (T, classes), "
                                            f"got {output_shape}")
        y, classes = np.asarray(y), output_shape[-1]
        if len(output_shape) > 1:  # a label per position
            if y.shape[1:] != output_shape[:-1]:
                raise DataError("y", f"expected class labels of shape (n_samples, "
                                     f"{', '.join(map(str, output_shape[:-1]))}) for outputs "
                                     f"{output_shape}, got shape {y.shape}")
            return check_labels(y, classes, first, ndim=y.ndim)
        if y.ndim == 2:
            y = one_hot_labels(y, classes, first)
        return check_labels(y, classes, first)


class MeanSquaredError(Loss):
    """Half the squared error summed over outputs, averaged over samples."""

    name = "mse"
    task = "regression"

    def value_and_grad(
        self, xp: Any, outputs: Array, targets: Array, n_global: int
    ) -> tuple[Array, Array]:
        return mean_squared_error(xp, outputs, targets, n_global)

    def check_targets(self, y: np.ndarray, output_shape: tuple[int, ...],
                      first: int = 0) -> np.ndarray:
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
            raise DataError("y", f"expected real numbers, got dtype {y.dtype}")
        per = int(np.prod(output_shape))
        if y.ndim == 0 or int(np.prod(y.shape[1:])) != per:
            raise DataError("y", f"expected {per} target values per sample, got shape {y.shape}")
        check_finite(y, "y", first)
        return y.astype(np.float64, copy=False)


def check_finite(a: np.ndarray, what: str, first: int = 0) -> None:
    """DataError when ``a`` (samples along axis 0) holds NaN or inf, saying how many and the
    first sample that does, counted from ``first``.

    >>> check_finite(np.array([[0.0, np.inf], [np.nan, 1.0]]), "X", first=10)
    Traceback (most recent call last):
    ...
    pnngraph.exceptions.DataError: X: 2 values are NaN or inf (first in sample 10)
    """
    bad = ~np.isfinite(a)
    if bad.any():
        row = int(np.argmax(bad.reshape(a.shape[0], -1).any(axis=1)))
        raise DataError(what, f"{int(bad.sum())} values are NaN or inf (first in sample "
                              f"{first + row})")


def check_labels(y: Any, n_classes: int, first: int = 0, ndim: int = 1) -> np.ndarray:
    """Integer class labels in [0, n_classes) as int64, in an array of ``ndim`` axes (samples,
    then positions); DataError naming the first bad one (samples counted from ``first``).

    >>> check_labels(np.array([[0, 1], [2, 3]]), 3, first=10, ndim=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pnngraph.exceptions.DataError: y: label 3 at sample 11, position 1 is outside [0, 3) ...
    """
    y = np.asarray(y)
    if y.ndim != ndim:
        raise DataError("y", f"expected a {ndim}-D array of class labels, got shape {y.shape}")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.number) or \
            np.issubdtype(y.dtype, np.complexfloating):
        raise DataError("y", f"expected integer class labels, got dtype {y.dtype}")
    if not np.issubdtype(y.dtype, np.integer):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if np.any(bad):
            at = np.unravel_index(int(np.argmax(bad)), y.shape)
            raise DataError("y", f"expected integer class labels, got {y[at].item()!r} at "
                                 f"{_place(at, first)}")
    out = y.astype(np.int64)
    bad = (out < 0) | (out >= n_classes)
    if np.any(bad):
        at = np.unravel_index(int(np.argmax(bad)), y.shape)
        raise DataError(
            "y", f"label {out[at]} at {_place(at, first)} is outside [0, {n_classes}) for "
                 f"{n_classes} classes")
    return out


def _place(at: tuple[Any, ...], first: int) -> str:
    """Where entry ``at`` of a label array is: "index i" of a 1-D one, else "sample s,
    position p"."""
    if len(at) == 1:
        return f"index {first + int(at[0])}"
    return f"sample {first + int(at[0])}, position {', '.join(str(int(i)) for i in at[1:])}"


def one_hot_labels(y: Any, n_classes: int, first: int = 0) -> np.ndarray:
    """The class index of each one-hot row of ``y`` (shape ``(n, n_classes)``, numbers or
    bools: each row one 1, the rest 0) as int64; DataError naming the first bad row.

    >>> one_hot_labels(np.eye(3)[[2, 0]], 3).tolist()
    [2, 0]
    """
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] != n_classes:
        raise DataError("y", f"expected class labels or one-hot rows of {n_classes} classes, "
                             f"got shape {y.shape}")
    if y.dtype != bool and (not np.issubdtype(y.dtype, np.number)
                            or np.issubdtype(y.dtype, np.complexfloating)):
        raise DataError("y", f"expected one-hot rows of numbers, got dtype {y.dtype}")
    ones, zeros = (y == 1), (y == 0)
    bad = ~np.all(ones | zeros, axis=1) | (np.sum(ones, axis=1) != 1)
    if np.any(bad):
        i = int(np.argmax(bad))
        row = ", ".join(str(v) for v in y[i, :8].tolist()) + (", ..." if n_classes > 8 else "")
        raise DataError("y", f"expected one-hot rows (one 1, the rest 0), got [{row}] in row "
                             f"{first + i}")
    return np.argmax(ones, axis=1).astype(np.int64)


LOSSES: dict[str, type[Loss]] = {"cross_entropy": SoftmaxCrossEntropy, "mse": MeanSquaredError}


def get_loss(loss: str | Loss, *, label_smoothing: float | None = None) -> Loss:
    """A :class:`Loss` instance from a name ("cross_entropy", "mse", in any case) or an
    instance; ``label_smoothing`` (cross-entropy by name only) builds it with that option."""
    if label_smoothing is None:
        return loss if isinstance(loss, Loss) else LOSSES[check_name("loss", loss, LOSSES)]()
    if isinstance(loss, Loss) or LOSSES[check_name("loss", loss, LOSSES)] is not \
            SoftmaxCrossEntropy:
        raise ConfigError("label_smoothing", "loss='cross_entropy' (by name) to smooth",
                          repr(loss) if isinstance(loss, Loss) else loss)
    return SoftmaxCrossEntropy(label_smoothing)
