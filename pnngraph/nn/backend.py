"""Array backends: one array namespace for all layer math, and explicit host <-> device moves.

Layer, loss and optimizer code never imports numpy or CuPy: it receives ``xp``, an array namespace
following the Python array API standard, taken from its inputs. A :class:`Backend` bundles such a
namespace with the device arrays live on and the two explicit transfers every worker needs:
``asarray`` (host numpy -> backend) and ``to_numpy`` (backend -> host numpy).

Three backends exist:

========== ======================================== =============================================
name       namespace                                use
========== ======================================== =============================================
numpy      ``numpy`` itself (2.1 and later          CPU workers, the serial reference
           implement the standard; no wrapper
           between a layer and numpy's functions)
cupy       ``array_api_compat.cupy``                GPU workers (the ``gpu`` extra)
emulated   ``array_api_strict`` on device "device1"  tests: a stand-in GPU that refuses implicit
                                                    mixing with numpy and other devices
========== ======================================== =============================================

>>> import numpy as np
>>> be = get_backend("emulated")
>>> x = be.asarray(np.ones(3))
>>> float(be.xp.sum(x))
3.0
>>> be.to_numpy(x * 2.0)
array([2., 2., 2.])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import array_api_compat
import numpy as np

from pnngraph.exceptions import ConfigError, UnknownNameError

Array = Any
"""Any array of a supported backend (numpy, CuPy or array-api-strict)."""

BackendName = Literal["numpy", "cupy", "emulated"]
BACKENDS: tuple[str, ...] = ("numpy", "cupy", "emulated")


@dataclass(frozen=True)
class Backend:
    """An array namespace plus the device its arrays live on.

    Attributes
    ----------
    name : {"numpy", "cupy", "emulated"}
    xp : module
        The array API namespace the layer functions receive.
    device : object or None
        Device passed to ``xp.asarray``; ``None`` for numpy.
    """

    name: str
    xp: Any
    device: Any = None

    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """Move a host (numpy) array to this backend, optionally casting to ``dtype``."""
        host = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
        if self.name == "numpy":
            return host
        return self.xp.asarray(host, device=self.device)

    def to_numpy(self, x: Array) -> np.ndarray:
        """Copy an array of this backend to a host numpy array (a no-op for numpy)."""
        return to_numpy(x)

    def tree_to_numpy(self, tree: Any) -> Any:
        """:meth:`to_numpy` applied to every array in nested lists, tuples and dicts."""
        return tree_map(lambda v: v if _is_scalar(v) else to_numpy(v), tree)

    def tree_asarray(self, tree: Any) -> Any:
        """:meth:`asarray` applied to every array in nested lists, tuples and dicts."""
        return tree_map(lambda v: v if _is_scalar(v) else self.asarray(v), tree)


NUMPY = Backend("numpy", np, None)


def get_backend(name: str = "numpy") -> Backend:
    """Return the backend called ``name`` ("numpy", "cupy" or "emulated").

    Raises
    ------
    UnknownNameError
        For any other name.
    ConfigError
        For "cupy" when CuPy is not installed or no CUDA device is visible.
    """
    if name == "numpy":
        return NUMPY
    check_backend(name)
    if name == "emulated":
        import array_api_strict as strict

        return Backend("emulated", strict, strict.Device("device1"))
    if name == "cupy":
        import cupy

        return Backend("cupy", array_api_compat.array_namespace(cupy.empty(0)), None)
    raise UnknownNameError("backend", name, BACKENDS)


def check_backend(name: str, devices: int = 1) -> None:
    """Refuse, with what to install, a backend this process cannot compute with: "cupy"
    without CuPy or with fewer than ``devices`` visible CUDA devices, "emulated" without
    array-api-strict.

    >>> check_backend("numpy")
    """
    if name == "emulated":
        try:
            import array_api_strict  # noqa: F401
        except ImportError:
            raise ConfigError("backend", "the emulated device installed "
                              "(pip install 'pnngraph[emulate]')", "emulated") from None
        return
    if name != "cupy":
        return
    try:
        import cupy
    except ImportError:
        raise ConfigError("backend", "CuPy installed (pip install 'pnngraph[gpu]')",
                          "cupy") from None
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as err:
        raise ConfigError("backend", "a visible CUDA device", f"cupy ({err})") from None
    if count < devices:
        raise ConfigError("backend", f"{devices} visible CUDA devices", count)


def namespace(*arrays: Array) -> Any:
    """The array API namespace of ``arrays`` (they must share one): numpy itself for numpy
    arrays, as :data:`NUMPY` has it."""
    if all(isinstance(a, np.ndarray) for a in arrays):
        return np
    return array_api_compat.array_namespace(*arrays)


def to_numpy(x: Array) -> np.ndarray:
    """Copy any supported array to a host numpy array."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_array_api_strict_namespace(array_api_compat.array_namespace(x)):
        import array_api_strict as strict

        return np.asarray(x.to_device(strict.Device("CPU_DEVICE")))
    return np.asarray(x)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, int | float | str | bool)


def tree_map(fn: Any, tree: Any) -> Any:
    """Apply ``fn`` to every leaf of nested lists, tuples and dicts; other values are leaves.

    >>> tree_map(lambda v: v + 1, [{"a": 1}, (2, 3)])
    [{'a': 2}, (3, 4)]
    """
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [tree_map(fn, v) for v in tree]
    if isinstance(tree, tuple):
        return tuple(tree_map(fn, v) for v in tree)
    if tree is None:
        return None
    return fn(tree)


def device_of(x: Array) -> Any:
    """The device ``x`` lives on, as its namespace's ``asarray(..., device=)`` expects."""
    return array_api_compat.device(x)
