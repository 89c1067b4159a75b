"""The unchanged kernels/*.cu on the CPU: g++ compiles each with kernels/cuda_emulation.h
(one std::thread per CUDA thread, std::barrier for __syncthreads, blocks one after another)
and ctypes calls a kernel with cupy.RawKernel's convention, fn(grid, block, args).

For correctness, not speed: an emulated thread is an OS thread.  The tests
(tests/test_kernels_emulated.py, the strict stand-in for cupy in tests/strict_device.py, the
course's kernel task) and chapter 14 launch the kernels through `compile_emulated()`.
"""
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from .. import backend

GXX = shutil.which("g++")


def _c_arg(a):
    if a is None:
        return ctypes.c_void_p(None)
    if isinstance(a, np.ndarray):
        # C-contiguous, or (gemm's operands) views whose last axis is contiguous, the kernel
        # reading them through the row strides it is given
        assert a.flags.c_contiguous or a.strides[-1] == a.itemsize, "kernels take arrays with a contiguous last axis"
        return ctypes.c_void_p(a.ctypes.data)
    if isinstance(a, np.int32):
        return ctypes.c_int32(int(a))
    raise TypeError(f"kernel arguments are arrays, None or numpy.int32 (explicit 32-bit sizes), "
                    f"got {type(a).__name__}")


class KernelTrap(RuntimeError):
    """A kernel called __trap() (a blanked course task's body does)."""


class EmulatedModule:
    """A kernels/*.cu compiled for the CPU; get_function(name)(grid, block, args) like cupy."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))

    def get_function(self, name):
        launch = getattr(self.lib, "emu_launch_" + name)
        launch.restype = ctypes.c_int

        def fn(grid, block, args):
            g, b = tuple(grid) + (1,) * (3 - len(grid)), tuple(block) + (1,) * (3 - len(block))
            held = [_c_arg(a) for a in args]
            argv = (ctypes.c_void_p * len(held))(*[ctypes.cast(ctypes.pointer(h), ctypes.c_void_p)
                                                   for h in held])
            rc = launch(*[ctypes.c_uint(v) for v in g + b], argv)
            if rc == 2:
                raise KernelTrap(f"{name}: a thread called __trap()")
            if rc != 0:
                raise RuntimeError(f"{name}: invalid launch shape grid={g} block={b}")
        return fn


_EMULATED = {}
FLAGS = ["-std=c++20", "-O2", "-pthread", "-shared", "-fPIC", "-Wall", "-Werror"]


def _digest():
    """A hash of everything the build reads (every file in kernels/, the compiler, its flags):
    the name of the cache folder, so an edited kernel is compiled again and nothing else is."""
    h = hashlib.sha256(" ".join([GXX or "", *FLAGS]).encode())
    for name in sorted(os.listdir(backend.kernels_dir())):
        h.update(name.encode())
        with open(os.path.join(backend.kernels_dir(), name), "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:16]


def _complete(folder):
    return all(os.path.exists(os.path.join(folder, source[:-3] + ".so")) for source in backend.KERNEL_FILES)


def compile_emulated():
    """{stem: EmulatedModule}: every kernels/*.cu compiled with g++ (in parallel), once per
    version of the sources: the libraries are kept in <tmp>/avb-emulated-<hash of the sources>
    and reused by later processes (the tests start many)."""
    if _EMULATED:
        return _EMULATED
    if GXX is None:
        raise RuntimeError("g++ is not on the PATH: cannot build the CPU emulation of the kernels")
    final = os.path.join(tempfile.gettempdir(), f"avb-emulated-{_digest()}")
    if not _complete(final):
        _build(final)
    _EMULATED.update({source[:-3]: EmulatedModule(os.path.join(final, source[:-3] + ".so"))
                      for source in backend.KERNEL_FILES})
    return _EMULATED


def _build(final):
    """Compile into a fresh folder beside `final`, then rename it into place: a process that
    reads `final` sees every library or none, and two builds at once do not mix."""
    out = tempfile.mkdtemp(prefix=".avb-emulated-build-", dir=os.path.dirname(final))
    procs = {}
    for source in backend.KERNEL_FILES:
        stem = source[:-3]
        with open(os.path.join(backend.kernels_dir(), source), encoding="utf-8") as fh:
            text = fh.read()
        names = re.findall(r"__global__ void (\w+)##SFX", text)
        exports = "".join(f"EMU_EXPORT({n}{sfx})\n" for n in names for sfx in ("f32", "f64"))
        exports += "".join(f"EMU_EXPORT({n})\n" for n in re.findall(r"__global__ void (\w+)\(", text))
        cpp = os.path.join(out, f"{stem}.cpp")
        with open(cpp, "w", encoding="utf-8") as fh:
            fh.write(f'#include "cuda_emulation.h"\n#include "{source}"\n{exports}')
        procs[stem] = subprocess.Popen(
            [GXX, *FLAGS, "-I", backend.kernels_dir(), cpp, "-o", os.path.join(out, f"{stem}.so")],
            stderr=subprocess.PIPE, text=True)
    errors = [p.stderr.read() for p in procs.values() if p.wait() != 0]
    if errors:
        shutil.rmtree(out, ignore_errors=True)
        raise RuntimeError("\n".join(errors))
    try:
        os.rename(out, final)
    except OSError:                                # the folder exists: another build finished first,
        if _complete(final):                       # or an incomplete one was left behind
            shutil.rmtree(out, ignore_errors=True)
        else:
            shutil.rmtree(final, ignore_errors=True)
            os.rename(out, final)


def emulated_module(stem):
    return compile_emulated()[stem]
