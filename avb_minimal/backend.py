"""Array backend: the only module that may import cupy.

The device is chosen by the caller (`--device cpu|gpu`, `device_module`); arrays carry
their device with them, and `array_module(a)` is the module of the arrays a function
works with, so every array a loop creates is created on the device of its inputs.
Importing this module never fails and never prints a traceback on a machine without
cupy or a GPU.

On a GPU the hot ops of :mod:`avb_minimal.ops` run the CUDA kernels of
``kernels/*.cu``: :func:`kernel` compiles a file with ``cupy.RawModule`` the first
time one of its kernels is asked for.  The NumPy forms in `ops` run everywhere else.
When cupy is chosen, autograd is taught about cupy arrays (an ArrayBox and a VSpace
for ``cupy.ndarray``), so gradients of device arrays stay on the device.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Callable

import autograd.numpy as anp
import numpy
from autograd.numpy import numpy_vjps
from autograd.numpy.numpy_boxes import ArrayBox
from autograd.numpy.numpy_vspaces import ArrayVSpace
from autograd.tracer import getval

DEVICES = ("cpu", "gpu")
KERNEL_FILES = ("inner_product.cu", "bernoulli.cu", "gemm.cu", "philox.cu", "adam.cu")
INSTALL = ("pip install 'avb-minimal[cuda13]' (CUDA 13 drivers) or 'avb-minimal[cuda12]' (CUDA 12): "
           "cupy-cuda13x / cupy-cuda12x")
_state = {"cupy": None}   # the device module once found: cupy, or a stand-in (`use_device_module`)
_modules = {}             # file stem -> compiled cupy.RawModule


def _cupy_or_none():
    """The device module: cupy if it imports and sees a GPU (or the stand-in in use), else None."""
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


def device_module(device: str = "cpu") -> ModuleType:
    """The array module of `--device`: numpy for 'cpu'; cupy for 'gpu', or one clear error
    naming the flag and what to install when there is no cupy or no GPU."""
    if device not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return numpy
    mod = _cupy_or_none()
    if mod is None:
        why = "cupy is installed but sees no GPU" if _cupy_importable() else "cupy is not installed"
        raise ValueError(f"--device gpu: {why}; on a machine with an NVIDIA GPU, {INSTALL}")
    return mod


@contextlib.contextmanager
def use_device_module(module: ModuleType):
    """Make `module` (a cupy-like module: the strict stand-in of the tests) the device module
    for the duration: `--device gpu` and `array_module` then use it."""
    old, old_modules = _state["cupy"], dict(_modules)
    _register_autograd(module)
    _state["cupy"] = module
    _modules.clear()
    try:
        yield module
    finally:
        _state["cupy"] = old
        _modules.clear()
        _modules.update(old_modules)


def _cupy_importable():
    try:
        return importlib.util.find_spec("cupy") is not None
    except Exception:
        return False


def to_numpy(a: numpy.ndarray) -> numpy.ndarray:
    """Host copy of an array from either device (the one explicit device -> host copy)."""
    if is_device_array(a):
        return a.get()
    return numpy.asarray(a)


def is_device_array(a: object) -> bool:
    """True for an array of the device module.  Never imports cupy."""
    mod = _state["cupy"] or sys.modules.get("cupy")
    return mod is not None and isinstance(a, mod.ndarray)


def array_module(a: object) -> ModuleType:
    """The device module for a device array, numpy for anything else (cupy.get_array_module)."""
    if is_device_array(a):
        return _state["cupy"] or sys.modules["cupy"]
    return numpy


def tree_to_device(tree, xp: ModuleType):
    """Every array leaf of a pytree (params, optimiser states) as an array of module xp;
    other leaves (Adam's step count) as they are."""
    if xp is numpy:
        return tree_to_host(tree)
    return _map_arrays(lambda a: xp.asarray(a), tree)


def tree_to_host(tree):
    """Every array leaf of a pytree as a NumPy array (device arrays copied to the host)."""
    return _map_arrays(to_numpy, tree)


def _map_arrays(fn, tree):
    if isinstance(tree, dict):
        return {k: _map_arrays(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        out = [_map_arrays(fn, v) for v in tree]
        return tuple(out) if isinstance(tree, tuple) else out
    if isinstance(tree, numpy.ndarray) or is_device_array(tree):
        return fn(tree)
    return tree


class DeviceRNG:
    """Noise drawn by the device's own generator, counter-based so that a run resumes bit
    for bit: draw number n reseeds one generator with (seed, n), and a checkpoint stores
    (seed, n).  Its methods are those of numpy.random.Generator that the training loops
    use; with xp = numpy it draws on the host the same way (a device run resumed on the
    CPU continues its stream's design there)."""

    def __init__(self, xp: ModuleType, seed: int, counter: int = 0):
        self.xp, self.seed, self.counter = xp, int(seed), int(counter)
        self._rs = None if xp is numpy else xp.random.RandomState(0)

    def _next(self):
        key = (self.seed * 1_000_003 + self.counter) % (2 ** 63)
        self.counter += 1
        if self._rs is None:
            return numpy.random.default_rng(key)
        self._rs.seed(key)
        return self._rs

    def standard_normal(self, size=None, dtype=numpy.float64):
        return self._next().standard_normal(size, dtype=dtype)

    def random(self, size=None, dtype=numpy.float64):
        g = self._next()
        return g.random(size, dtype=dtype) if self._rs is None else g.random_sample(size, dtype=dtype)

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._next().uniform(low, high, size)

    def integers(self, low, high=None, size=None):
        g = self._next()
        return g.integers(low, high, size) if self._rs is None else g.randint(low, high, size)

    @property
    def state(self) -> dict:
        """What a checkpoint stores to continue the stream."""
        return {"device_seed": self.seed, "counter": self.counter}


def memory_bytes(xp: ModuleType = numpy) -> int | None:
    """The memory arrays of module `xp` can use: the host's physical memory for numpy, the
    device's for cupy; None where the system does not say."""
    try:
        if xp is numpy:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return int(xp.cuda.runtime.memGetInfo()[1])
    except (AttributeError, ValueError, OSError, TypeError):
        return None


def check_fits(nbytes: int, what: str, xp: ModuleType = numpy) -> None:
    """ValueError before allocating, if `nbytes` exceed the memory of `xp`'s machine."""
    have = memory_bytes(xp)
    if have is not None and nbytes > have:
        raise ValueError(f"{what} would need about {nbytes / 2 ** 30:,.1f} GiB of memory; this "
                         f"{'machine' if xp is numpy else 'GPU'} has {have / 2 ** 30:,.1f} GiB")


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
    numpy_vjps.repeat_to_match_shape = _repeat_to_match_shape


_host_repeat_to_match_shape = numpy_vjps.repeat_to_match_shape


def _repeat_to_match_shape(g, shape, dtype, axis, keepdims):
    """autograd's helper of the VJPs of sum and mean, made device-clean: its own version adds
    host zeros (numpy.zeros) to g, which a device array refuses.  Host arrays take the
    original path unchanged (the same numbers)."""
    if not is_device_array(getval(g)) or shape == ():
        return _host_repeat_to_match_shape(g, shape, dtype, axis, keepdims)
    axes = range(len(shape)) if axis is None else (axis if isinstance(axis, (tuple, list)) else (axis,))
    new_shape = list(shape)
    for a in axes:
        new_shape[a] = 1
    reps = int(numpy.prod([shape[a] for a in axes]))
    xp = array_module(getval(g))
    return anp.reshape(g, tuple(new_shape)) + xp.zeros(shape, dtype=dtype), reps
