"""Blocks: layers made of layers, for models that are not a chain.

``Parallel(branches, merge=...)`` runs every branch (a list of layers; an empty list is the
identity) on the same input ``x`` and merges the outputs::

    merge="add"      y = f_1(x) + f_2(x) + ...
    merge="concat"   y = concat(f_1(x), f_2(x), ..., axis)   (a per-sample axis, channels: 0)

``Residual(layers)`` is ``y = x + f(x)`` with ``f`` the chain ``layers`` (He et al., 2016);
``Residual(layers, shortcut=[...])`` replaces the identity by a projection, for a block that
changes the shape.

A block is one layer of its model: one dict of the model's parameter list (its parameters are
named ``"<branch>.<index>.<name>"``, nesting as blocks nest), one unit of the pipeline's stages
(a stage boundary falls between blocks, so a skip connection never crosses two devices), one row
of the report. Its backward sends ``dy`` down every branch (the matching slice of it for concat)
and sums the branches' input gradients, in branch order, so every strategy adds them alike.

>>> import numpy as np
>>> from pnngraph.nn.layers import Dense, ReLU
>>> from pnngraph.nn.model import Sequential
>>> model = Sequential([Dense(8), Residual([Dense(8), ReLU(), Dense(8)]), Dense(3)],
...                    input_shape=(4,))
>>> model.shapes
[(4,), (8,), (8,), (3,)]
>>> sorted(model.params[1])
['0.0.W', '0.0.b', '0.2.W', '0.2.b']
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from pnngraph.exceptions import ConfigError, ShapeError, UnknownNameError, check_int
from pnngraph.nn.backend import Array
from pnngraph.nn.layers import Context, Layer, Params, Shape

MERGES = ("add", "concat")


def sub_salt(salt: int, branch: int, index: int) -> int:
    """The dropout salt of layer ``index`` of ``branch`` inside a block salted ``salt``: distinct
    for every position, and from every top-level layer index below 10**6."""
    return (salt * 1_000_003 + branch + 1) * 1_000_003 + index + 1


class Parallel(Layer):
    """Branches run on the same input, their outputs added or concatenated (module docstring)."""

    kind = "parallel"
    composite = True

    def __init__(self, branches: Sequence[Sequence[Layer]], *, merge: str = "add",
                 axis: int = 0, name: str | None = None) -> None:
        super().__init__(name)
        if isinstance(branches, Layer) or not isinstance(branches, Sequence) or not branches:
            raise ConfigError(f"{type(self).__name__} branches",
                              "a non-empty list of lists of layers", branches)
        self.branches: list[list[Layer]] = []
        for b, branch in enumerate(branches):
            if isinstance(branch, Layer) or not isinstance(branch, Sequence):
                raise ConfigError(f"{type(self).__name__} branches[{b}]", "a list of layers",
                                  type(branch).__name__)
            for i, layer in enumerate(branch):
                if not isinstance(layer, Layer):
                    raise ConfigError(f"{type(self).__name__} branches[{b}][{i}]",
                                      "a pnngraph Layer", type(layer).__name__)
                if layer.name == layer.kind:
                    layer.name = f"{layer.kind}{i}"
            self.branches.append(list(branch))
        if merge not in MERGES:
            raise UnknownNameError("merge", merge, MERGES)
        self.merge = merge
        self.axis = check_int(f"{type(self).__name__} axis", axis, low=0)
        self.stochastic = any(layer.stochastic for branch in self.branches for layer in branch)

    # ----------------------------------------------------------------------------- shapes
    def _branch_shapes(self, shape: Shape) -> list[list[Shape]]:
        """Per branch, the shape before each of its layers and after the last."""
        out = []
        for b, branch in enumerate(self.branches):
            shapes = [shape]
            for i, layer in enumerate(branch):
                try:
                    shapes.append(layer.output_shape(shapes[-1]))
                except ShapeError as err:
                    raise ShapeError(err.expected, err.got, detail=f"in branch {b}, layer {i} "
                                     f"({layer.name}) of {self.name}") from None
            out.append(shapes)
        return out

    def output_shape(self, shape: Shape) -> Shape:
        ends = [shapes[-1] for shapes in self._branch_shapes(shape)]
        if self.merge == "add":
            for b, end in enumerate(ends):
                if end != ends[0]:
                    raise ShapeError(ends[0], end, detail=f"branch {b} of {self.name} must give "
                                     "the shape of branch 0 to be added")
            return ends[0]
        a = self.axis
        for b, end in enumerate(ends):
            if len(end) <= a or end[:a] + end[a + 1:] != ends[0][:a] + ends[0][a + 1:]:
                raise ShapeError(ends[0], end, detail=f"branch {b} of {self.name} must match "
                                 f"branch 0 on every axis but {a} to be concatenated")
        return (*ends[0][:a], sum(end[a] for end in ends), *ends[0][a + 1:])

    def init_params(self, shape: Shape, rng: np.random.Generator, dtype: Any) -> Params:
        layers = [(b, i, layer) for b, branch in enumerate(self.branches)
                  for i, layer in enumerate(branch)]
        shapes = self._branch_shapes(shape)
        params: Params = {}
        for (b, i, layer), sub in zip(layers, rng.spawn(len(layers)), strict=True):
            for k, v in layer.init_params(shapes[b][i], sub, dtype).items():
                params[f"{b}.{i}.{k}"] = v
        return params

    def init_buffers(self, shape: Shape, dtype: Any) -> Params:
        shapes = self._branch_shapes(shape)
        return {f"{b}.{i}.{k}": v for b, branch in enumerate(self.branches)
                for i, layer in enumerate(branch)
                for k, v in layer.init_buffers(shapes[b][i], dtype).items()}

    def flops(self, shape: Shape) -> float:
        shapes = self._branch_shapes(shape)
        inner = sum(layer.flops(shapes[b][i]) for b, branch in enumerate(self.branches)
                    for i, layer in enumerate(branch))
        merge = math.prod(self.output_shape(shape)) if self.merge == "add" else 0
        return float(inner + merge * (len(self.branches) - 1))

    # ----------------------------------------------------------------------------- running
    def _split(self, params: Params) -> list[list[Params]]:
        split: list[list[Params]] = [[{} for _ in branch] for branch in self.branches]
        for key, v in params.items():
            b, i, name = key.split(".", 2)
            split[int(b)][int(i)][name] = v
        return split

    def forward(self, xp: Any, params: Params, x: Array, ctx: Context) -> tuple[Array, Any]:
        outs, caches = [], []
        for b, (branch, ps) in enumerate(zip(self.branches, self._split(params), strict=True)):
            y, branch_caches = x, []
            for i, (layer, p) in enumerate(zip(branch, ps, strict=True)):
                here = (replace(ctx, layer=sub_salt(ctx.layer, b, i))
                        if layer.stochastic and ctx.training else ctx)
                y, cache = (layer.forward(xp, p, y, here) if ctx.sync is None else
                            ctx.sync.forward(layer, xp, p, y, here))
                branch_caches.append(cache)
            outs.append(y)
            caches.append(branch_caches)
        if self.merge == "add":
            y = outs[0] + outs[1] if len(outs) > 1 else outs[0]
            for more in outs[2:]:
                y += more
        else:
            y = xp.concat(outs, axis=self.axis + 1)
        widths = [out.shape[self.axis + 1] for out in outs]
        return y, (caches, widths, ctx.sync)

    def _dys(self, dy: Array, widths: list[int]) -> list[Array]:
        if self.merge == "add":
            return [dy] * len(widths)
        lead = (slice(None),) * (self.axis + 1)
        cuts = np.cumsum([0, *widths]).tolist()
        return [dy[(*lead, slice(lo, hi), ...)] for lo, hi in itertools.pairwise(cuts)]

    def _backward(self, xp: Any, params: Params, cache: Any, dy: Array,
                  input_grad: bool) -> tuple[Array | None, Params]:
        from pnngraph.nn.model import backward_layers

        caches, widths, sync = cache
        grads: Params = {}
        dx = None
        for b, (branch, ps, bc, d) in enumerate(zip(
                self.branches, self._split(params), caches, self._dys(dy, widths), strict=True)):
            if branch:
                dxb, gs = backward_layers(xp, branch, ps, bc, d, input_grad, sync)
                for i, g in enumerate(gs):
                    grads.update({f"{b}.{i}.{k}": v for k, v in g.items()})
            else:
                dxb = d
            if input_grad:
                dx = dxb if dx is None else dx + dxb
        return dx, grads

    def backward(self, xp: Any, params: Params, cache: Any, dy: Array) -> tuple[Array, Params]:
        return self._backward(xp, params, cache, dy, True)

    def param_grads(self, xp: Any, params: Params, cache: Any, dy: Array) -> Params:
        return self._backward(xp, params, cache, dy, False)[1] if params else {}

    # ----------------------------------------------------------------------------- files
    def config(self) -> dict[str, Any]:
        return {"branches": [_configs(branch) for branch in self.branches],
                "merge": self.merge, "axis": self.axis, "name": self.name}

    def __repr__(self) -> str:
        branches = ", ".join(f"[{', '.join(map(repr, branch))}]" for branch in self.branches)
        return f"Parallel([{branches}], merge={self.merge!r}, axis={self.axis}, " \
               f"name={self.name!r})"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        config = dict(config)
        config["branches"] = [_layers(branch) for branch in config["branches"]]
        return cls(**config)


class Residual(Parallel):
    """``y = x + f(x)``, ``f`` the chain ``layers``; with ``shortcut``, ``y = s(x) + f(x)``."""

    kind = "residual"

    def __init__(self, layers: Sequence[Layer], *, shortcut: Sequence[Layer] | None = None,
                 name: str | None = None) -> None:
        if isinstance(layers, Layer):
            raise ConfigError("Residual layers", "a list of layers", type(layers).__name__)
        super().__init__([layers, shortcut or []], merge="add", name=name)

    def config(self) -> dict[str, Any]:
        shortcut = self.branches[1]
        return {"layers": _configs(self.branches[0]),
                "shortcut": _configs(shortcut) if shortcut else None, "name": self.name}

    def __repr__(self) -> str:
        layers, shortcut = self.branches
        more = f", shortcut={shortcut!r}" if shortcut else ""
        return f"Residual({layers!r}{more}, name={self.name!r})"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        shortcut = config.get("shortcut")
        return cls(_layers(config["layers"]), shortcut=None if shortcut is None else
                   _layers(shortcut), name=config.get("name"))


def _configs(layers: Sequence[Layer]) -> list[dict[str, Any]]:
    return [{"kind": layer.kind, **layer.config()} for layer in layers]


def _layers(configs: Sequence[dict[str, Any]]) -> list[Layer]:
    from pnngraph.nn.model import layer_from_config

    out = []
    for spec in configs:
        spec = dict(spec)
        out.append(layer_from_config(spec.pop("kind"), spec))
    return out
