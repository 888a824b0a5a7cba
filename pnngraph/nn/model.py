"""Sequential models: an ordered list of layers, checked against an input shape, with parameters.

Parameters are a list with one dict name -> array per layer (empty for parameter-free layers), so a
contiguous slice of it is the parameters of a pipeline stage. Running a model is a pair of pure
functions over that list::

    forward(xp, params, x, ctx, start, stop)        -> (y, caches)
    backward(xp, params, caches, dy, start, stop)   -> (dx, grads)

Files are ``.npz`` (arrays) holding a JSON document (architecture, shapes); nothing is pickled.

>>> import numpy as np
>>> from pnngraph.nn.layers import Dense, ReLU
>>> model = Sequential([Dense(4, 8), ReLU(), Dense(8, 3)], input_shape=(4,), seed=0)
>>> model.n_params
67
>>> [layer.name for layer in model.layers]
['dense0', 'relu1', 'dense2']
>>> model.predict(np.zeros((2, 4))).shape
(2, 3)
>>> model.predict_proba(np.zeros((2, 4))).sum(axis=1).round(12).tolist()
[1.0, 1.0]
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np

from pnngraph.exceptions import ConfigError, DataError, ModelFileError, ShapeError
from pnngraph.nn.attention import Embedding, LayerNorm, MultiHeadSelfAttention, PositionalEmbedding
from pnngraph.nn.backend import Array, get_backend, namespace, to_numpy
from pnngraph.nn.batchnorm import BatchNorm, BatchSync
from pnngraph.nn.blocks import Parallel, Residual
from pnngraph.nn.conv import AvgPool2D, Conv2D, GlobalAvgPool2D, MaxPool2D
from pnngraph.nn.layers import (
    ACTIVATIONS,
    Context,
    Dense,
    Dropout,
    Flatten,
    Layer,
    Shape,
)
from pnngraph.nn.losses import Loss, check_finite, get_loss
from pnngraph.nn.recurrent import GRU, LSTM
from pnngraph.npzfile import META, NpzArchive, write_npz
from pnngraph.testing import check_layer

LAYER_TYPES: dict[str, type[Layer]] = {
    **ACTIVATIONS,
    **{c.kind: c for c in (Dense, Flatten, Dropout, Conv2D, MaxPool2D, Parallel, Residual)},
    **{c.kind: c for c in (LayerNorm, Embedding, PositionalEmbedding, MultiHeadSelfAttention)},
    **{c.kind: c for c in (AvgPool2D, GlobalAvgPool2D, LSTM, GRU, BatchNorm)},
}
"""Every layer class a model file may name, by ``kind``: the built-in ones and those given to
:func:`register_layer`."""
BUILTIN_KINDS = frozenset(LAYER_TYPES)
FORMAT = "pnngraph-model"
FORMAT_VERSION = 1
DTYPES = ("float32", "float64")

ParamList = list[dict[str, Any]]


L = TypeVar("L", bound=type[Layer])


def register_layer(cls: L) -> L:
    """Make a :class:`Layer` subclass known by its ``kind``, so that models holding it save,
    load and resume from checkpoints; usable as a class decorator. Register it at import time
    of the module defining it, in every process that loads such a model.

    Its ``config()`` must hold JSON-able arguments that rebuild it (``from_config`` calls
    ``cls(**config)`` unless the class overrides it), and building a model with parameters
    checks its ``backward`` on a small batch (:func:`pnngraph.testing.check_layer`).
    Registering a second class under a kind already taken is refused.
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)) or cls is Layer:
        raise ConfigError("register_layer", "a subclass of pnngraph.nn.Layer", cls)
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind or kind == Layer.kind:
        raise ConfigError(f"{cls.__name__}.kind", "a class attribute naming the layer "
                          "(a non-empty string other than 'layer')", kind)
    taken = LAYER_TYPES.get(kind)
    if taken is not None and taken is not cls and (
            kind in BUILTIN_KINDS or taken.__qualname__ != cls.__qualname__
            or taken.__module__ != cls.__module__):
        raise ConfigError(f"{cls.__name__}.kind", f"a kind no other layer has ({kind!r} is "
                          f"{taken.__module__}.{taken.__qualname__})", kind)
    LAYER_TYPES[kind] = cls  # the same class defined again (a reloaded module) replaces itself
    return cls


def layer_from_config(kind: str, config: dict[str, Any]) -> Layer:
    """Rebuild a layer from its ``kind`` and :meth:`Layer.config`."""
    if kind not in LAYER_TYPES:
        raise ConfigError("layer kind", "one of " + ", ".join(sorted(LAYER_TYPES)) +
                          " (a layer class of your own: register it with "
                          "pnngraph.register_layer)", kind)
    return LAYER_TYPES[kind].from_config(dict(config))


def forward_layers(
    xp: Any, layers: Sequence[Layer], params: ParamList, x: Array, ctx: Context, start: int = 0
) -> tuple[Array, list[Any]]:
    """Run ``layers`` (the model's layers ``start, start + 1, ...``) in order; ``params`` has
    one dict per layer. Returns output and caches. A stochastic layer sees its index in the
    model as ``ctx.layer``."""
    caches = []
    for i, (layer, p) in enumerate(zip(layers, params, strict=True)):
        here = replace(ctx, layer=start + i) if layer.stochastic and ctx.training else ctx
        x, cache = (layer.forward(xp, p, x, here) if ctx.sync is None else
                    ctx.sync.forward(layer, xp, p, x, here))
        caches.append(cache)
    return x, caches


def backward_layers(
    xp: Any, layers: Sequence[Layer], params: ParamList, caches: list[Any], dy: Array,
    input_grad: bool = True,
    sync: BatchSync | None = None,
) -> tuple[Array | None, ParamList]:
    """Backward through ``layers`` in reverse: the input gradient and per-layer gradients.

    ``input_grad=False`` skips the input gradient (``None`` comes back): the first layer of a
    model computes the gradients of its parameters only, which saves a GEMM per dense layer.
    ``sync``: the step's :class:`~pnngraph.nn.batchnorm.BatchSync` (the forward's
    ``ctx.sync``), for BatchNorm layers.
    """
    grads: ParamList = [{}] * len(layers)
    last = 0 if input_grad else 1
    for j in range(len(layers) - 1, last - 1, -1):
        dy, grads[j] = (layers[j].backward(xp, params[j], caches[j], dy) if sync is None else
                        sync.backward(layers[j], xp, params[j], caches[j], dy, False))
    if input_grad:
        return dy, grads
    grads[0] = (layers[0].param_grads(xp, params[0], caches[0], dy) if sync is None else
                sync.backward(layers[0], xp, params[0], caches[0], dy, True))
    return None, grads


def _own_layers(layers: Sequence[Layer], shapes: Sequence[Shape], where: str = ""
                ) -> Iterator[tuple[Layer, Shape, str]]:
    """The layers of classes not built into pnngraph, inside blocks too, with their input
    shapes and where they sit."""
    for i, layer in enumerate(layers):
        here = f"{where}layer {i} ({layer.name})"
        if isinstance(layer, Parallel):
            for b, (branch, inner) in enumerate(zip(layer.branches,
                                                    layer._branch_shapes(shapes[i]),
                                                    strict=True)):
                yield from _own_layers(branch, inner, f"{here} branch {b} ")
        elif LAYER_TYPES.get(layer.kind) is not type(layer) or layer.kind not in BUILTIN_KINDS:
            yield layer, shapes[i], here


class Sequential:
    """Layers applied in order; parameters initialised (seeded) once an input shape is known.

    Parameters
    ----------
    layers : sequence of Layer
    input_shape : tuple of int, optional
        Shape of one sample (no batch dimension). Given here or later to :meth:`build`.
    seed : int
        Seed of the parameter initialisation; layer ``i`` draws from ``default_rng([seed, i])``.
    dtype : {"float64", "float32"}
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        *,
        input_shape: Sequence[int] | None = None,
        seed: int = 0,
        dtype: str = "float64",
    ) -> None:
        layers = list(layers)
        if not layers:
            raise ConfigError("layers", "at least one layer", layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ConfigError(f"layers[{i}]", "a pnngraph Layer", type(layer).__name__)
        if dtype not in DTYPES:
            raise ConfigError("dtype", " or ".join(DTYPES), dtype)
        seen: set[str] = set()
        for i, layer in enumerate(layers):
            if layer.name == layer.kind:
                layer.name = f"{layer.kind}{i}"
            if layer.name in seen:
                raise ConfigError(f"layers[{i}].name", "a name unique in the model", layer.name)
            seen.add(layer.name)
        self.layers = layers
        self.seed = int(seed)
        self.dtype = dtype
        self.input_shape: Shape | None = None
        self.shapes: list[Shape] = []
        self.params: ParamList = []
        self.buffers: ParamList = []
        """Per layer, the arrays it keeps besides its parameters (:meth:`Layer.init_buffers`:
        BatchNorm's running statistics), which evaluation reads and the optimizer never sees."""
        if input_shape is not None:
            self.build(input_shape)

    # ------------------------------------------------------------------------------ building
    def build(self, input_shape: Sequence[int], *, init: bool = True) -> Sequential:
        """Check every layer against per-sample ``input_shape`` and initialise the parameters
        (``init=False`` leaves them empty, for a model whose parameters come from elsewhere).

        Raises :class:`ShapeError` naming the first layer (index and name) that does not fit.
        """
        shape = tuple(int(d) for d in input_shape)
        if not shape or any(d < 1 for d in shape):
            raise ShapeError("a non-empty shape of positive sizes", shape)
        shapes = [shape]
        for i, layer in enumerate(self.layers):
            try:
                shapes.append(layer.output_shape(shapes[-1]))
            except ShapeError as err:
                raise ShapeError(
                    err.expected, err.got, layer_index=i, layer_name=layer.name,
                    detail=err.detail,
                ) from None
        if init:  # a skeleton (init=False) is the architecture of a model already built
            for layer, at, where in _own_layers(self.layers, shapes):
                check_layer(layer, at, where=where)
        self.input_shape, self.shapes = shape, shapes
        self.params = [
            layer.init_params(shapes[i], np.random.default_rng([self.seed, i]), self.dtype)
            for i, layer in enumerate(self.layers)
        ] if init else []
        # buffers start at their defaults even with init=False (a skeleton): whoever fills in
        # the parameters replaces them
        self.buffers = [layer.init_buffers(shapes[i], self.dtype)
                        for i, layer in enumerate(self.layers)]
        return self

    def _require_built(self) -> Shape:
        if self.input_shape is None:
            raise ConfigError("model", "a built model (give input_shape or call build())", None)
        return self.input_shape

    @property
    def output_shape(self) -> Shape:
        self._require_built()
        return self.shapes[-1]

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(a.shape)) for layer in self.params for a in layer.values())

    def layer_flops(self) -> list[float]:
        """Forward FLOPs per sample of each layer."""
        self._require_built()
        return [layer.flops(self.shapes[i]) for i, layer in enumerate(self.layers)]

    # ------------------------------------------------------------------------------ running
    def forward(
        self,
        xp: Any,
        params: ParamList,
        x: Array,
        ctx: Context,
        start: int = 0,
        stop: int | None = None,
    ) -> tuple[Array, list[Any]]:
        """Run layers ``start:stop``; ``params`` holds exactly those layers' parameters."""
        return forward_layers(xp, self.layers[start:stop], params, x, ctx, start)

    def backward(
        self,
        xp: Any,
        params: ParamList,
        caches: list[Any],
        dy: Array,
        start: int = 0,
        stop: int | None = None,
        input_grad: bool = True,
        sync: BatchSync | None = None,
    ) -> tuple[Array | None, ParamList]:
        """Backward through layers ``start:stop``: the input gradient (``None`` with
        ``input_grad=False``) and per-layer gradients (``sync``: the forward's ``ctx.sync``)."""
        return backward_layers(xp, self.layers[start:stop], params, caches, dy, input_grad,
                               sync)

    def check_inputs(self, X: Any, what: str = "X") -> np.ndarray:
        """``X`` as a host array of the model's dtype, after checking its shape and values."""
        shape = self._require_built()
        X = np.asarray(X)
        if X.ndim == 0 or X.shape[0] == 0:
            raise DataError(what, f"expected at least one sample, got shape {X.shape}")
        if X.dtype == object or not np.issubdtype(X.dtype, np.number) or \
                np.issubdtype(X.dtype, np.complexfloating):
            raise DataError(what, f"expected real numbers, got dtype {X.dtype}")
        if X.shape[1:] != shape:
            if X.ndim == 2 and len(shape) > 1 and X.shape[1] == math.prod(shape):
                X = X.reshape((X.shape[0], *shape))
            else:
                raise ShapeError(shape, tuple(X.shape[1:]), detail=f"{what} has shape {X.shape}")
        X = X.astype(self.dtype, copy=False)
        self.check_values(X, what)
        return X

    def check_values(self, X: np.ndarray, what: str = "X", first: int = 0) -> None:
        """DataError for values of host inputs ``X`` the model cannot take (NaN or inf, or
        what its first layer refuses: :meth:`Layer.check_input`), samples counted from
        ``first``."""
        check_finite(X, what, first)
        self.layers[0].check_input(X, what, first)

    def predict(self, X: Any, *, batch_size: int = 1024, backend: str = "numpy") -> np.ndarray:
        """Model outputs for ``X`` (evaluation mode: no dropout), as a host array."""
        X = self.check_inputs(X)
        be = get_backend(backend)
        params = be.tree_asarray(self.eval_params())
        outs = []
        for lo in range(0, X.shape[0], batch_size):
            y, _ = self.forward(be.xp, params, be.asarray(X[lo : lo + batch_size]), Context())
            outs.append(be.to_numpy(y))
        return np.concatenate(outs)

    def eval_params(self) -> ParamList:
        """Per layer, its parameters and buffers in one dict: what evaluation runs on."""
        if not any(self.buffers):
            return self.params
        return [{**p, **b} for p, b in zip(self.params, self.buffers, strict=True)]

    def predict_proba(self, X: Any, *, batch_size: int = 1024,
                      backend: str = "numpy") -> np.ndarray:
        """Class probabilities for ``X``: the softmax of :meth:`predict`'s logits over their last
        axis (classes; a sequence model has one row per position), each row shifted by its
        maximum first (exact for any finite logits), so rows sum to 1.

        >>> model = Sequential([Dense(4, 3)], input_shape=(4,))
        >>> p = model.predict_proba(np.ones((2, 4)))
        >>> p.shape, bool(np.allclose(p.sum(axis=1), 1.0))
        ((2, 3), True)
        """
        if len(self.output_shape) not in (1, 2):
            raise ConfigError("model", "a classifier with outputs of shape (classes,) or "
                              "(T, classes) for predict_proba", self.output_shape)
        logits = self.predict(X, batch_size=batch_size, backend=backend)
        z = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
        out: np.ndarray = z / np.sum(z, axis=-1, keepdims=True)
        return out

    def evaluate(
        self, X: Any, y: Any, *, loss: str | Loss = "cross_entropy", batch_size: int = 1024
    ) -> dict[str, float]:
        """Mean loss over ``(X, y)`` and, for classification, the accuracy (per position for
        outputs of shape ``(T, classes)``)."""
        loss_fn = get_loss(loss)
        out = self.predict(X, batch_size=batch_size)
        targets = loss_fn.check_targets(np.asarray(y), self.output_shape)
        if len(targets) != len(out):
            raise DataError("y", f"expected {len(out)} labels (one per sample), got {len(targets)}")
        value, _ = loss_fn.value_and_grad(namespace(out), out, targets, len(out))
        result = {"loss": float(value)}
        if loss_fn.task == "classification":
            result["accuracy"] = float(np.mean(np.argmax(out, axis=-1) == targets))
        return result

    # ------------------------------------------------------------------------------ files
    def config(self) -> dict[str, Any]:
        """JSON-able description: architecture, input shape, dtype and seed."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "dtype": self.dtype,
            "seed": self.seed,
            "layers": [{"kind": layer.kind, **layer.config()} for layer in self.layers],
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], *, init: bool = True) -> Sequential:
        """The model :meth:`config` describes; ``init=False`` skips creating parameters."""
        layers = []
        for spec in config["layers"]:
            spec = dict(spec)
            layers.append(layer_from_config(spec.pop("kind"), spec))
        model = cls(layers, seed=config.get("seed", 0), dtype=config.get("dtype", "float64"))
        if config.get("input_shape") is not None:
            model.build(config["input_shape"], init=init)
        return model

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write architecture and parameters to one ``.npz`` file (no pickled objects),
        atomically: ``path`` holds the old file or the new one, never a part."""
        self._require_built()
        for layer, _, where in _own_layers(self.layers, self.shapes):
            if LAYER_TYPES.get(layer.kind) is not type(layer):
                raise ConfigError(f"{where}: {type(layer).__name__}.kind",
                                  "a kind registered with pnngraph.register_layer, so that the "
                                  "file can be loaded", layer.kind)
        arrays = {
            f"{kind}/{i}/{k}": to_numpy(v)
            for kind, layers in (("param", self.params), ("buffer", self.buffers))
            for i, layer in enumerate(layers)
            for k, v in layer.items()
        }
        arrays[META] = np.frombuffer(json.dumps(self.config()).encode(), np.uint8)
        write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, max_bytes: int | None = None) -> Sequential:
        """Read a model written by :meth:`save`; :class:`ModelFileError` for anything else.

        The parameters' names and shapes are checked against the architecture from the arrays'
        headers, before any is read; ``max_bytes`` bounds the bytes they may declare
        (:data:`pnngraph.npzfile.MAX_BYTES` by default).
        """
        with NpzArchive(path, max_bytes=max_bytes) as archive:
            config = archive.metadata()
            if config.get("format") != FORMAT:
                raise ModelFileError(path, f"unknown format {config.get('format')!r}")
            try:
                model = cls.from_config(config)
            except Exception as err:
                raise ModelFileError(path, f"bad metadata: {err}") from None
            expected = {
                f"{kind}/{i}/{k}": v.shape
                for kind, layers in (("param", model.params), ("buffer", model.buffers))
                for i, layer in enumerate(layers)
                for k, v in layer.items()
            }
            got = {k: m.shape for k, m in archive.members.items() if k != META}
            if got.keys() != expected.keys():
                raise ModelFileError(path, f"parameters {sorted(got)[:8]} do not match the "
                                           "architecture")
            for name, shape in expected.items():
                if got[name] != shape:
                    raise ModelFileError(path, f"parameters do not match the architecture: "
                                               f"{name!r} is {list(got[name])}, expected "
                                               f"{list(shape)}")
            files = archive.read(expected)
        model.params = [
            {k: files[f"param/{i}/{k}"] for k in layer} for i, layer in enumerate(model.params)
        ]
        model.buffers = [
            {k: files[f"buffer/{i}/{k}"] for k in layer} for i, layer in enumerate(model.buffers)
        ]
        return model

    def skeleton(self) -> Sequential:
        """The same architecture without parameters: small to send, ready to receive them."""
        return Sequential.from_config(self.config(), init=False)

    def copy(self) -> Sequential:
        """A model with the same layers' configuration and copied parameters."""
        other = self.skeleton()
        other.params = [{k: np.array(to_numpy(v)) for k, v in p.items()} for p in self.params]
        other.buffers = [{k: np.array(to_numpy(v)) for k, v in b.items()} for b in self.buffers]
        return other

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}\n], input_shape={self.input_shape})"
