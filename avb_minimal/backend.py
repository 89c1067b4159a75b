"""Array backend: the only module that may import cupy.

`AVB_BACKEND=numpy|cupy` overrides the automatic choice.  Importing this module
never fails and never prints a traceback on a machine without cupy or a GPU.

On a GPU the hot ops of :mod:`avb_minimal.ops` run the CUDA kernels of
``kernels/*.cu``: :func:`kernel` compiles a file with ``cupy.RawModule`` the first
time one of its kernels is asked for.  The NumPy forms in `ops` run everywhere else.
When cupy is chosen, autograd is taught about cupy arrays (an ArrayBox and a VSpace
for ``cupy.ndarray``), so gradients of device arrays stay on the device.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType
from typing import Callable

import numpy
from autograd.numpy.numpy_boxes import ArrayBox
from autograd.numpy.numpy_vspaces import ArrayVSpace

_BACKENDS = ("numpy", "cupy")
KERNEL_FILES = ("inner_product.cu", "bernoulli.cu")
_state = {"name": None, "announced": False, "cupy": None}
_modules = {}        # file stem -> compiled cupy.RawModule


def _cupy_or_none():
    """Return the cupy module if it imports and sees a GPU, else None."""
    if _state["cupy"] is not None:
        return _state["cupy"]
    try:
        import cupy  # noqa: PLC0415  (cupy is imported here and nowhere else)
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # no cupy, no driver, no device: all mean "no GPU"
        return None
    _register_autograd(cupy)
    _state["cupy"] = cupy
    return cupy


def cupy_module() -> ModuleType | None:
    """The cupy module when cupy imports and sees a GPU, else None (for tests and benchmarks)."""
    return _cupy_or_none()


def backend_name() -> str:
    """'numpy' or 'cupy': the backend the hot ops dispatch to."""
    if _state["name"] is None:
        wanted = os.environ.get("AVB_BACKEND", "").strip().lower()
        if wanted and wanted not in _BACKENDS:
            raise ValueError(f"AVB_BACKEND must be one of {_BACKENDS}, got {wanted!r}")
        if wanted == "cupy":
            if _cupy_or_none() is None:
                raise RuntimeError("AVB_BACKEND=cupy was asked for, but cupy is not installed "
                                   "or sees no GPU; unset AVB_BACKEND or set it to numpy")
            _state["name"] = "cupy"
        elif wanted == "numpy":
            _state["name"] = "numpy"
        else:
            _state["name"] = "cupy" if _cupy_or_none() is not None else "numpy"
            if _state["name"] == "numpy" and not _state["announced"]:
                _state["announced"] = True
                if os.environ.get("AVB_QUIET_BACKEND") is None and _cupy_importable():
                    print("avb_minimal: cupy found but no GPU; using the NumPy fallback",
                          file=sys.stderr)
    return _state["name"]


def _cupy_importable():
    try:
        return importlib.util.find_spec("cupy") is not None
    except Exception:
        return False


def xp() -> ModuleType:
    """The array module of the active backend (numpy here unless a GPU is present)."""
    if backend_name() == "cupy":
        return _cupy_or_none()
    return numpy


def to_numpy(a: numpy.ndarray) -> numpy.ndarray:
    """Host copy of an array from either backend."""
    if hasattr(a, "get"):
        return a.get()
    return numpy.asarray(a)


def to_device(a: numpy.ndarray) -> numpy.ndarray:
    """`a` as an array of the active backend (a cupy array on a GPU, else unchanged)."""
    return xp().asarray(a)


def is_device_array(a: object) -> bool:
    """True for a cupy array.  Looks cupy up in sys.modules: never imports it."""
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(a, cupy.ndarray)


def array_module(a: numpy.ndarray) -> ModuleType:
    """cupy for a cupy array, numpy for anything else (like cupy.get_array_module)."""
    return sys.modules["cupy"] if is_device_array(a) else numpy


def check_finite(name: str, a: numpy.ndarray) -> None:
    """ValueError naming `name` if `a` holds NaN or inf (one pass over the array)."""
    ok = array_module(a).isfinite(a)
    if not bool(ok.all()):
        raise ValueError(f"{name} must be finite; it holds {int(ok.size - ok.sum())} NaN or inf value(s)")


# ------------------------------------------------------------------ kernels
def kernels_dir() -> str:
    """The folder holding the kernel sources: avb_minimal/kernels in an installed
    package (setup.py ships the top-level kernels/ folder there), else the
    top-level kernels/ of a source checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    for d in (os.path.join(here, "kernels"), os.path.join(os.path.dirname(here), "kernels")):
        if all(os.path.isfile(os.path.join(d, f)) for f in KERNEL_FILES):
            return d
    raise FileNotFoundError(f"the CUDA sources {KERNEL_FILES} were found neither in "
                            f"{os.path.join(here, 'kernels')} nor in the source tree")


def kernel_source(stem: str) -> str:
    """The text of kernels/<stem>.cu."""
    with open(os.path.join(kernels_dir(), stem + ".cu"), encoding="utf-8") as fh:
        return fh.read()


def kernel(stem: str, name: str) -> Callable:
    """The CUDA kernel `name` of kernels/<stem>.cu, callable as fn(grid, block, args).

    The file is compiled (NVRTC, through cupy.RawModule) the first time one of its
    kernels is asked for, then kept.
    """
    cupy = _cupy_or_none()
    if cupy is None:
        raise RuntimeError(f"kernel {name!r} needs cupy and a GPU; with NumPy arrays the ops "
                           "run their NumPy forms")
    if stem not in _modules:
        # --include-path: NVRTC compiles a string, so it must be told where device_math.cuh is
        _modules[stem] = cupy.RawModule(code=kernel_source(stem),
                                        options=("--std=c++17", f"--include-path={kernels_dir()}"))
    return _modules[stem].get_function(name)


# ------------------------------------------------------------------ autograd
def _register_autograd(cupy):
    """Let autograd box cupy arrays and build their vector spaces on the device."""

    class CupyVSpace(ArrayVSpace):
        def __init__(self, value):          # ArrayVSpace would copy value to the host
            self.shape, self.dtype = value.shape, value.dtype

        def zeros(self):
            return cupy.zeros(self.shape, dtype=self.dtype)

        def ones(self):
            return cupy.ones(self.shape, dtype=self.dtype)

        def standard_basis(self):
            for idx in numpy.ndindex(*self.shape):
                v = cupy.zeros(self.shape, dtype=self.dtype)
                v[idx] = 1
                yield v

        def randn(self):
            return cupy.asarray(numpy.random.randn(*self.shape)).astype(self.dtype)

        def _inner_prod(self, x, y):
            return float(cupy.vdot(x.ravel(), y.ravel()))

    ArrayBox.register(cupy.ndarray)
    CupyVSpace.register(cupy.ndarray)
