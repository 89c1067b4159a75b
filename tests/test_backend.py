"""Unit tests of avb_minimal.backend that run on any machine (no cupy, no GPU needed).

What is checked here (compiling and running the kernels is tests/test_kernels_compile.py,
tests/test_kernels_emulated.py and tests/test_device.py):
  * array_module / is_device_array: numpy for host arrays, the cupy module for a cupy
    array, found through sys.modules without ever importing cupy;
  * to_numpy is a no-op on a NumPy array and calls .get() on a device array;
    tree_to_device / tree_to_host move the array leaves of a pytree and leave the rest;
  * check_finite names the argument and counts the NaN and inf values;
  * kernels_dir holds every file of KERNEL_FILES, kernel_source returns their text, and a
    missing source is a FileNotFoundError;
  * the device choice: device_module('cpu') is numpy; 'gpu' without cupy, or with a cupy
    that sees no GPU, is one ValueError naming --device and what to install; a bad name
    is a ValueError naming the allowed ones; kernel() without cupy is a clear RuntimeError;
  * DeviceRNG draws the same numbers from the same (seed, counter), so a run resumes;
  * importing the backend in a fresh interpreter without cupy never fails or prints.
The module caches its choice in `backend._state`: each test that touches it gets a fresh
copy through monkeypatch, so the state of the session is restored afterwards.
"""
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from avb_minimal import backend

HAS_GPU = backend.cupy_module() is not None


@pytest.fixture
def fresh(monkeypatch):
    """backend with no backend chosen yet (restored after the test), AVB_* unset."""
    monkeypatch.setattr(backend, "_state", {"cupy": None})
    monkeypatch.setattr(backend, "_modules", {})
    return backend


def _fake_cupy(monkeypatch, device_count=1):
    """A stand-in cupy module in sys.modules (restored after the test)."""
    fake = types.ModuleType("cupy")

    class ndarray:                          # noqa: N801  (cupy's spelling)
        def __init__(self, host):
            self.host = np.asarray(host)

        def get(self):
            return self.host.copy()

    def get_device_count():
        if isinstance(device_count, Exception):
            raise device_count
        return device_count

    fake.ndarray = ndarray
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    return fake


# ------------------------------------------------------------------ arrays
@pytest.mark.parametrize("a", [np.zeros(3), np.float32(1.0), 2.5, [1.0, 2.0], np.ma.masked_array([1.0])],
                         ids=["ndarray", "np-scalar", "float", "list", "masked"])
def test_array_module_of_host_values_is_numpy(a):
    assert backend.array_module(a) is np
    assert backend.is_device_array(a) is False


def test_is_device_array_never_imports_cupy(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    assert backend.is_device_array(np.ones(2)) is False
    assert backend.array_module(np.ones(2)) is np
    assert "cupy" not in sys.modules


def test_a_cupy_array_is_dispatched_to_the_cupy_module(monkeypatch):
    fake = _fake_cupy(monkeypatch)
    dev = fake.ndarray([1.0, 2.0])
    assert backend.is_device_array(dev) is True
    assert backend.array_module(dev) is fake
    assert backend.array_module(np.ones(2)) is np                         # host arrays stay on numpy
    out = backend.to_numpy(dev)                                           # a device array: .get()
    assert isinstance(out, np.ndarray) and out is not dev.host
    np.testing.assert_array_equal(out, [1.0, 2.0])


def test_to_numpy_of_a_numpy_array_is_a_no_op():
    a = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    assert backend.to_numpy(a) is a
    b = backend.to_numpy([[1, 2], [3, 4]])
    assert isinstance(b, np.ndarray) and b.shape == (2, 2)


def test_trees_move_their_arrays_and_keep_the_rest():
    tree = {"params": [(np.ones((2, 3), np.float32), np.zeros(3, np.float32))], "t": 7}
    host = backend.tree_to_host(tree)
    assert host["t"] == 7 and host["params"][0][0] is tree["params"][0][0]    # no copy on the host
    assert isinstance(host["params"][0], tuple)
    assert backend.tree_to_device(tree, np)["params"][0][1] is tree["params"][0][1]


def test_check_finite_accepts_finite_arrays():
    backend.check_finite("x", np.array([0.0, -1e300, 1e300], np.float64))
    backend.check_finite("x", np.zeros((0, 3)))                           # empty: nothing to complain of
    backend.check_finite("x", np.float32(3.0))


@pytest.mark.parametrize("bad, count", [
    (np.array([1.0, np.nan, 2.0]), 1),
    (np.array([[np.inf, 0.0], [-np.inf, np.nan]], np.float32), 3),
    (np.full((4, 5), np.nan), 20),
    (np.float64(np.inf), 1),
])
def test_check_finite_names_the_argument_and_counts_bad_values(bad, count):
    with pytest.raises(ValueError) as e:
        backend.check_finite("the_weights", bad)
    assert str(e.value) == f"the_weights must be finite; it holds {count} NaN or inf value(s)"


# ------------------------------------------------------------------ kernels
def test_kernels_dir_holds_every_kernel_file():
    d = backend.kernels_dir()
    assert os.path.isabs(d) and os.path.isdir(d)
    assert backend.KERNEL_FILES and all(f.endswith(".cu") for f in backend.KERNEL_FILES)
    for f in backend.KERNEL_FILES:
        assert os.path.isfile(os.path.join(d, f)), f


@pytest.mark.parametrize("source", backend.KERNEL_FILES)
def test_kernel_source_returns_the_file_text(source):
    stem = source[:-len(".cu")]
    text = backend.kernel_source(stem)
    with open(os.path.join(backend.kernels_dir(), source), encoding="utf-8") as fh:
        assert text == fh.read()
    assert 'extern "C" __global__' in text


def test_kernel_source_of_an_unknown_stem_is_file_not_found():
    with pytest.raises(FileNotFoundError):
        backend.kernel_source("no_such_kernel")


def test_kernels_dir_without_the_sources_says_where_it_looked(monkeypatch):
    monkeypatch.setattr(backend, "KERNEL_FILES", ("no_such_kernel.cu",))
    with pytest.raises(FileNotFoundError, match=r"no_such_kernel\.cu.*were found neither in"):
        backend.kernels_dir()


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU message")
def test_kernel_without_cupy_is_a_clear_runtime_error(fresh):
    with pytest.raises(RuntimeError, match="kernel 'ip_rows_f32' needs cupy and a GPU"):
        fresh.kernel("inner_product", "ip_rows_f32")
    assert fresh._modules == {}


# ------------------------------------------------------------------ device choice
def test_cpu_is_numpy_and_a_bad_name_is_a_clear_error(fresh):
    assert fresh.device_module("cpu") is np
    with pytest.raises(ValueError, match="--device must be one of cpu, gpu, got 'cuda'"):
        fresh.device_module("cuda")


@pytest.mark.parametrize("device_count", [0, RuntimeError("no CUDA driver")], ids=["no-device", "no-driver"])
def test_a_cupy_that_sees_no_gpu_is_one_clear_line(fresh, monkeypatch, device_count):
    _fake_cupy(monkeypatch, device_count=device_count)
    monkeypatch.setattr(fresh, "_cupy_importable", lambda: True)
    assert fresh.cupy_module() is None
    with pytest.raises(ValueError) as e:
        fresh.device_module("gpu")
    msg = str(e.value)
    assert msg.startswith("--device gpu: cupy is installed but sees no GPU;") and "\n" not in msg
    assert "cupy-cuda13x" in msg and "cupy-cuda12x" in msg


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU message")
def test_gpu_without_cupy_says_what_to_install(fresh, monkeypatch):
    monkeypatch.setattr(fresh, "_cupy_importable", lambda: False)
    with pytest.raises(ValueError, match=r"--device gpu: cupy is not installed; .*pip install 'avb-minimal\[cuda13\]'"):
        fresh.device_module("gpu")


def test_device_rng_is_a_function_of_seed_and_counter():
    a, b = backend.DeviceRNG(np, 3), backend.DeviceRNG(np, 3)
    first = [a.standard_normal((2, 3)), a.integers(0, 10, size=4), a.uniform(size=2), a.random(3)]
    assert a.state == {"device_seed": 3, "counter": 4}
    c = backend.DeviceRNG(np, 3, counter=2)                       # resumed at draw 2
    np.testing.assert_array_equal(c.uniform(size=2), first[2])
    np.testing.assert_array_equal(b.standard_normal((2, 3)), first[0])
    assert not np.array_equal(backend.DeviceRNG(np, 4).standard_normal((2, 3)), first[0])


def test_importing_the_backend_without_cupy_never_fails():
    """A fresh interpreter where `import cupy` fails: the import, the choice and the
    array helpers all work, and nothing is printed."""
    code = ("import sys; sys.modules['cupy'] = None\n"          # makes `import cupy` raise ImportError
            "import avb_minimal.backend as b\n"
            "import numpy as np\n"
            "assert b.cupy_module() is None\n"
            "assert b.device_module('cpu') is np\n"
            "assert b.array_module(np.ones(2)) is np and b.to_numpy(np.ones(2)).shape == (2,)\n"
            "print('ok')\n")
    env = dict(os.environ)
    env["OPENBLAS_NUM_THREADS"] = "1"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok\n" and r.stderr == ""
