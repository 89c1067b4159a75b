"""Array backend: the only module that may import cupy.

`AVB_BACKEND=numpy|cupy` overrides the automatic choice.  Importing this module
never fails and never prints a traceback on a machine without cupy or a GPU.
The CUDA kernels (``kernels/*.cu``) are loaded from here in a later layer; the
NumPy fallback in :mod:`avb_minimal.ops` is what runs everywhere else.
"""
import os
import sys

import numpy

_BACKENDS = ("numpy", "cupy")
_state = {"name": None, "announced": False}


def _cupy_or_none():
    """Return the cupy module if it imports and sees a GPU, else None."""
    try:
        import cupy  # noqa: PLC0415  (cupy is imported here and nowhere else)
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # no cupy, no driver, no device: all mean "no GPU"
        return None


def backend_name():
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
        import importlib.util
        return importlib.util.find_spec("cupy") is not None
    except Exception:
        return False


def xp():
    """The array module of the active backend (numpy here unless a GPU is present)."""
    if backend_name() == "cupy":
        return _cupy_or_none()
    return numpy


def to_numpy(a):
    """Host copy of an array from either backend."""
    if hasattr(a, "get"):
        return a.get()
    return numpy.asarray(a)
