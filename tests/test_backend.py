"""Unit tests of avb_minimal.backend that run on any machine (no cupy, no GPU needed).

What is checked here (compiling and running the kernels is tests/test_kernels_compile.py,
tests/test_kernels_emulated.py and tests/test_gpu.py):
  * array_module / is_device_array: numpy for host arrays, the cupy module for a cupy
    array, found through sys.modules without ever importing cupy;
  * to_numpy is a no-op on a NumPy array and calls .get() on a device array; to_device
    is a no-op under the numpy backend;
  * check_finite names the argument and counts the NaN and inf values;
  * kernels_dir holds every file of KERNEL_FILES, kernel_source returns their text, and a
    missing source is a FileNotFoundError;
  * the backend choice: AVB_BACKEND=numpy is honoured (case and spaces aside), a bad
    value is a ValueError naming the allowed ones, AVB_BACKEND=cupy without a GPU is a
    RuntimeError, a cupy that imports but fails is "no GPU", and without AVB_BACKEND the
    choice falls back to numpy; kernel() without cupy is a clear RuntimeError;
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
    monkeypatch.setattr(backend, "_state", {"name": None, "announced": False, "cupy": None})
    monkeypatch.setattr(backend, "_modules", {})
    for var in ("AVB_BACKEND", "AVB_QUIET_BACKEND"):
        monkeypatch.delenv(var, raising=False)
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


def test_to_device_under_the_numpy_backend_is_a_no_op(fresh, monkeypatch):
    monkeypatch.setenv("AVB_BACKEND", "numpy")
    a = np.ones((2, 2), np.float32)
    assert fresh.to_device(a) is a
    assert fresh.xp() is np


# ------------------------------------------------------------------ check_finite
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


# ------------------------------------------------------------------ backend choice
@pytest.mark.parametrize("value", ["numpy", "NumPy", "  numpy\n"])
def test_avb_backend_numpy_is_honoured(fresh, monkeypatch, value):
    monkeypatch.setenv("AVB_BACKEND", value)
    _fake_cupy(monkeypatch, device_count=1)                  # even when a GPU would be there
    assert fresh.backend_name() == "numpy"
    assert fresh.xp() is np
    assert fresh._state["cupy"] is None                      # cupy was not even looked at


@pytest.mark.parametrize("value", ["tensorflow", "gpu", "numpy,cupy"])
def test_a_bad_avb_backend_is_a_clear_error(fresh, monkeypatch, value):
    monkeypatch.setenv("AVB_BACKEND", value)
    with pytest.raises(ValueError) as e:
        fresh.backend_name()
    assert str(e.value) == f"AVB_BACKEND must be one of ('numpy', 'cupy'), got {value!r}"
    assert fresh._state["name"] is None                      # nothing chosen: fixing the variable works
    monkeypatch.setenv("AVB_BACKEND", "numpy")
    assert fresh.backend_name() == "numpy"


def test_the_choice_is_cached(fresh, monkeypatch):
    monkeypatch.setenv("AVB_BACKEND", "numpy")
    assert fresh.backend_name() == "numpy"
    monkeypatch.setenv("AVB_BACKEND", "bogus")               # read once: later changes are ignored
    assert fresh.backend_name() == "numpy"


@pytest.mark.parametrize("device_count", [0, RuntimeError("no CUDA driver")], ids=["no-device", "no-driver"])
def test_a_cupy_that_sees_no_gpu_counts_as_none(fresh, monkeypatch, capsys, device_count):
    _fake_cupy(monkeypatch, device_count=device_count)
    assert fresh.cupy_module() is None
    monkeypatch.setenv("AVB_BACKEND", "cupy")
    with pytest.raises(RuntimeError, match="AVB_BACKEND=cupy was asked for, but cupy is not installed"):
        fresh.backend_name()
    monkeypatch.delenv("AVB_BACKEND")
    monkeypatch.setenv("AVB_QUIET_BACKEND", "1")
    assert fresh.backend_name() == "numpy"
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU fallback")
def test_avb_backend_cupy_without_a_gpu_is_a_clear_error(fresh, monkeypatch):
    monkeypatch.setenv("AVB_BACKEND", "cupy")
    with pytest.raises(RuntimeError, match="unset AVB_BACKEND or set it to numpy"):
        fresh.backend_name()


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU fallback")
def test_without_avb_backend_the_fallback_is_numpy(fresh, capsys):
    assert fresh.backend_name() == "numpy"
    assert fresh.xp() is np
    assert capsys.readouterr().err == ""                     # no cupy installed: nothing to announce


def test_cupy_without_a_gpu_is_announced_once(fresh, monkeypatch, capsys):
    monkeypatch.setattr(fresh, "_cupy_or_none", lambda: None)
    monkeypatch.setattr(fresh, "_cupy_importable", lambda: True)
    assert fresh.backend_name() == "numpy"
    assert capsys.readouterr().err == "avb_minimal: cupy found but no GPU; using the NumPy fallback\n"
    fresh._state["name"] = None                              # asked again: said only once
    assert fresh.backend_name() == "numpy"
    assert capsys.readouterr().err == ""


def test_avb_quiet_backend_silences_the_announcement(fresh, monkeypatch, capsys):
    monkeypatch.setattr(fresh, "_cupy_or_none", lambda: None)
    monkeypatch.setattr(fresh, "_cupy_importable", lambda: True)
    monkeypatch.setenv("AVB_QUIET_BACKEND", "1")
    assert fresh.backend_name() == "numpy"
    assert capsys.readouterr().err == ""


def test_importing_the_backend_without_cupy_never_fails():
    """A fresh interpreter where `import cupy` fails: the import, the choice and the
    array helpers all work, and nothing is printed."""
    code = ("import sys; sys.modules['cupy'] = None\n"          # makes `import cupy` raise ImportError
            "import avb_minimal.backend as b\n"
            "import numpy as np\n"
            "assert b.cupy_module() is None\n"
            "assert b.backend_name() == 'numpy' and b.xp() is np\n"
            "assert b.array_module(np.ones(2)) is np and b.to_device(np.ones(2)).shape == (2,)\n"
            "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("AVB_BACKEND", "AVB_QUIET_BACKEND")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok\n" and r.stderr == ""
