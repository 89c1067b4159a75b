"""A strict stand-in for cupy, so that the device path is tested on machines without a GPU.

Its arrays (`StrictArray`) hold NumPy buffers but refuse what cupy refuses, the two ways
the device path broke on a real GPU:

1. implicit conversion to NumPy raises: ``np.asarray(dev)``, ``host[:] = dev``,
   ``dev.view(numpy.ndarray)`` (autograd's own ``concatenate`` does that);
2. mixing a host array into a device operation raises: ``dev + host``, ``np.dot(host, dev)``
   ("Unsupported type <class 'numpy.ndarray'>", as cupy says); stricter than cupy, so is any
   ``dev[...] = host`` (cupy copies a host array into ``dev[:]``, an exception the library
   never relies on), and any ufunc that is not NumPy's (scipy.special's have no cupy kernel).

Python and NumPy scalars mix freely, as with cupy.  The module object `strict` plays the
part of the cupy module: `array_module(dev)` returns it, its functions mirror NumPy's, its
`random` draws on the "device", and its `RawModule` runs the unchanged kernels/*.cu:

- `kernels="emulated"`: g++ compiles each .cu file with kernels/cuda_emulation.h (each
  CUDA thread a std::thread) and ctypes launches it as cupy.RawKernel would;
- `kernels="reference"`: the same launch (names, argument order, grid and block) served
  by each kernel's NumPy reference; training tests use it, because an emulated thread is
  an OS thread and a training step launches hundreds of blocks.

Use it through `activate(kind)` (a context manager that makes it the backend's device
module); `tests/conftest.py` gives tests a `device` fixture: real cupy where a GPU is
present, this stand-in everywhere else.
"""
import contextlib
import types

import numpy as np
from autograd import make_vjp

from avb_minimal import backend, ops
from avb_minimal.fast import device_ops
# the .cu files on the CPU (g++ and kernels/cuda_emulation.h): the package's, re-exported here
from avb_minimal.fast.emulate import GXX, EmulatedModule, KernelTrap, compile_emulated, emulated_module  # noqa: F401

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly.")


def _refuse_host(x):
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}")


def _unwrap(x):
    """StrictArray -> its buffer; a host array raises; everything else passes."""
    if isinstance(x, StrictArray):
        return x._a
    _refuse_host(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _foreign(x):
    """Another array-like with its own protocol (an autograd ArrayBox)."""
    return not isinstance(x, (StrictArray, np.ndarray, np.generic)) and hasattr(x, "__array_ufunc__")


def _wrap(x):
    if isinstance(x, np.ndarray):
        return StrictArray(x)
    if isinstance(x, np.generic):                # cupy's reductions give 0-d device arrays
        return StrictArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _index(idx):
    """Indices may be device arrays (unwrapped) or host integer arrays (as cupy allows)."""
    if isinstance(idx, StrictArray):
        return idx._a
    if isinstance(idx, tuple):
        return tuple(_index(i) for i in idx)
    return idx


class StrictArray:
    """A device array of the stand-in: a NumPy buffer that refuses to meet the host."""
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, a):
        assert isinstance(a, np.ndarray) and not isinstance(a, StrictArray)
        self._a = a

    # -------------------------------------------------------------- the two refusals
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        if any(_foreign(x) for x in inputs):
            return NotImplemented                    # an autograd box: it wraps us, not we it
        if getattr(np, ufunc.__name__, None) is not ufunc:
            raise TypeError(f"{ufunc.__name__} is not a NumPy ufunc: the device has no kernel for it "
                            "(e.g. scipy.special's, which cupy does not run)")
        args = [_unwrap(x) for x in inputs]
        if out is not None:
            for o in out:
                if not isinstance(o, StrictArray):
                    raise TypeError(f"Unsupported type {type(o)} as out=")
            kwargs["out"] = tuple(o._a for o in out)
        res = getattr(ufunc, method)(*args, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(res)

    def __array_function__(self, func, types_, args, kwargs):
        if any(t is not StrictArray and not issubclass(t, np.ndarray) for t in types_):
            return NotImplemented
        if func is np.einsum and "out" in kwargs:
            raise TypeError("einsum() got an unexpected keyword argument 'out' (cupy's einsum has none)")
        out = kwargs.get("out")
        res = func(*_unwrap(args), **_unwrap(kwargs))
        if isinstance(out, StrictArray):
            return out
        return _wrap(res)

    def get(self):
        """The explicit device -> host copy (cupy's `.get()`); counted, so that a test can
        check that a loop copies nothing to the host."""
        strict.gets += 1
        return self._a.copy()

    # -------------------------------------------------------------- array protocol
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: StrictArray(self._a.T))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) if isinstance(v, np.ndarray) else StrictArray(np.asarray(v)) for v in self._a)

    def __getitem__(self, idx):
        return _wrap(self._a[_index(idx)])

    def __setitem__(self, idx, value):
        self._a[_index(idx)] = _unwrap(value)

    def __repr__(self):
        return f"StrictArray({self._a!r})"

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def __format__(self, spec):
        return format(self._a.item() if self._a.size == 1 else self._a, spec)

    def view(self, dtype=None):
        if isinstance(dtype, type) and issubclass(dtype, np.ndarray):
            raise TypeError(f"view({dtype.__name__}) of a device array would reinterpret its "
                            "buffer (cupy reads it as a dtype)")
        return StrictArray(self._a.view(dtype) if dtype is not None else self._a.view())

    def astype(self, dtype, copy=True, **kw):
        return StrictArray(self._a.astype(dtype, copy=copy, **kw))

    def copy(self, order="C"):
        return StrictArray(self._a.copy(order))

    def reshape(self, *shape, **kw):
        return StrictArray(self._a.reshape(*shape, **kw))

    def ravel(self):
        return StrictArray(self._a.ravel())

    def transpose(self, *axes):
        return StrictArray(self._a.transpose(*axes))

    def squeeze(self, axis=None):
        return StrictArray(self._a.squeeze(axis))

    def item(self):
        return self._a.item()

    def tolist(self):
        return self._a.tolist()

    def fill(self, v):
        self._a.fill(v)

    def dot(self, other):
        return np.dot(self, other)


def _method(name):
    def m(self, *args, **kwargs):
        return getattr(np, name)(self, *args, **kwargs)
    m.__name__ = name
    return m


for _n in ("sum", "mean", "var", "std", "max", "min", "all", "any", "argmax", "argmin", "cumsum", "prod",
           "clip", "round"):
    setattr(StrictArray, _n, _method(_n))


def _binary(ufunc, reflected=False, inplace=False):
    if inplace:
        return lambda self, other: ufunc(self, other, out=(self,))
    if reflected:
        return lambda self, other: ufunc(other, self)
    return lambda self, other: ufunc(self, other)


for _name, _uf in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("truediv", np.true_divide),
                   ("floordiv", np.floor_divide), ("mod", np.remainder), ("pow", np.power),
                   ("matmul", np.matmul), ("and", np.logical_and), ("or", np.logical_or)):
    setattr(StrictArray, f"__{_name}__", _binary(_uf))
    setattr(StrictArray, f"__r{_name}__", _binary(_uf, reflected=True))
    if _name not in ("matmul", "and", "or"):
        setattr(StrictArray, f"__i{_name}__", _binary(_uf, inplace=True))
for _name, _uf in (("lt", np.less), ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal),
                   ("eq", np.equal), ("ne", np.not_equal)):
    setattr(StrictArray, f"__{_name}__", _binary(_uf))
StrictArray.__neg__ = lambda self: np.negative(self)
StrictArray.__pos__ = lambda self: self
StrictArray.__abs__ = lambda self: np.abs(self)
StrictArray.__invert__ = lambda self: np.invert(self)


# ------------------------------------------------------------------ the module
class _RandomState:
    """cupy.random.RandomState on the stand-in: draws land on the device."""

    def __init__(self, seed=None):
        self.seed(seed)

    def seed(self, seed=None):
        self._g = np.random.default_rng(seed)

    def standard_normal(self, size=None, dtype=np.float64):
        return StrictArray(np.asarray(self._g.standard_normal(size, dtype=dtype)))

    def random_sample(self, size=None, dtype=np.float64):
        return StrictArray(np.asarray(self._g.random(size, dtype=dtype)))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float64):
        return StrictArray(np.asarray(self._g.uniform(low, high, size).astype(dtype)))

    def randint(self, low, high=None, size=None, dtype=np.int64):
        return StrictArray(np.asarray(self._g.integers(low, high, size, dtype=dtype)))


class _Generator:
    """The stand-in's device generator: draws land on the device, never on the host."""

    def __init__(self, seed=None):
        self._g = np.random.default_rng(seed)

    def standard_normal(self, size=None, dtype=np.float64):
        return StrictArray(np.asarray(self._g.standard_normal(size, dtype=dtype)))

    def random(self, size=None, dtype=np.float64):
        return StrictArray(np.asarray(self._g.random(size, dtype=dtype)))

    def integers(self, low, high=None, size=None, dtype=np.int64):
        return StrictArray(np.asarray(self._g.integers(low, high, size, dtype=dtype)))


def _host_ok(name):
    """Creation functions take host data explicitly (cupy.asarray copies to the device)."""
    def f(a, dtype=None, **kw):
        if isinstance(a, StrictArray):
            return a if dtype is None or a.dtype == dtype else a.astype(dtype)
        return StrictArray(np.array(a, dtype=dtype, copy=True))
    f.__name__ = name
    return f


class _Module(types.ModuleType):
    """`strict`: the stand-in's cupy.  Unknown names are NumPy's functions behind the
    same refusals as StrictArray's."""

    def __init__(self):
        super().__init__("strict_cupy")
        self.ndarray = StrictArray
        self.asarray = _host_ok("asarray")
        self.array = _host_ok("array")
        self.random = types.SimpleNamespace(default_rng=_Generator, RandomState=_RandomState)
        self.kernels = "reference"
        self.launches = 0
        self.gets = 0
        self._emulated = {}
        self.cuda = types.SimpleNamespace(
            runtime=types.SimpleNamespace(getDeviceCount=lambda: 1,
                                          getDeviceProperties=lambda i: {"name": b"strict stand-in (CPU)",
                                                                         "totalGlobalMem": 2 ** 34},
                                          memGetInfo=lambda: (2 ** 34, 2 ** 34)),
            Device=lambda i=0: types.SimpleNamespace(id=0, synchronize=lambda: None),
            get_current_stream=lambda: types.SimpleNamespace(synchronize=lambda: None))

    def __getattr__(self, name):
        target = getattr(np, name)
        if not callable(target) or isinstance(target, type):
            return target                                    # dtypes, constants (float32, pi, newaxis)

        def f(*args, **kwargs):
            out = kwargs.get("out")
            res = target(*_unwrap(args), **_unwrap(kwargs))
            return out if isinstance(out, StrictArray) else _wrap(res)
        f.__name__ = name
        return f

    @staticmethod
    def asnumpy(a):
        return a.get() if isinstance(a, StrictArray) else np.asarray(a)

    @staticmethod
    def get_array_module(*args):
        return strict if any(isinstance(a, StrictArray) for a in args) else np

    def RawModule(self, code, options=()):                   # noqa: N802  (cupy's name)
        return _RawModule(self, code)


class _RawModule:
    def __init__(self, module, code):
        self.module, self.code = module, code

    def get_function(self, name):
        stem = next(s for p, s in KERNEL_STEMS if name.startswith(p))
        if self.module.kernels == "emulated":
            fn = emulated_module(stem).get_function(name)
        else:
            fn = REFERENCE[name.rsplit("_", 1)[0]]

        def launch(grid, block, args):
            for a in args:                                  # what a real launch would refuse
                if a is not None and not isinstance(a, (StrictArray, np.int32)):
                    raise TypeError(f"kernel {name}: argument of type {type(a).__name__} is not a "
                                    "device array or numpy.int32")
            self.module.launches += 1
            fn(grid, block, [a._a if isinstance(a, StrictArray) else a for a in args])
        return launch


strict = _Module()


@contextlib.contextmanager
def activate(kernels="reference"):
    """Make the stand-in the backend's device module for the duration."""
    strict.kernels = kernels
    with backend.use_device_module(strict):
        yield strict


# ------------------------------------------------------------------ kernels: NumPy references
def _softplus(t):
    return np.maximum(t, 0) + np.log1p(np.exp(-np.abs(t)))


def _sigmoid(t):
    return 0.5 * (np.tanh(0.5 * t) + 1)


# The references are the library's own NumPy forms (ops on host arrays) and autograd's VJPs
# of them: one definition of each op, which the course tasks blank with it.
def _vjp(op, args, argnum, g):
    return make_vjp(lambda v: op(*args[:argnum], v, *args[argnum + 1:]))(args[argnum])[0](g)


def _ip_rows(grid, block, a):
    F, G, out = a[:3]
    out[:] = ops.inner_product_rows(F, G)


def _ip_rows_vjp(grid, block, a):
    F, G, g, dF, dG = a[:5]
    if dF is not None:
        dF[:] = _vjp(ops.inner_product_rows, (F, G), 0, g)
    if dG is not None:
        dG[:] = _vjp(ops.inner_product_rows, (F, G), 1, g)


def _ip_rows_logistic(grid, block, a):
    F, G, c, y, loss, dT = a[:6]
    t = ops.inner_product_rows(F, G) + (c if c is not None else 0)
    loss[:] = _softplus(-t) if int(y) else _softplus(t)
    dT[:] = -_sigmoid(-t) if int(y) else _sigmoid(t)


def _ip_pairs(grid, block, a):
    F, G, out = a[:3]
    out[:] = ops.inner_product_all_pairs(F, G)


def _ip_pairs_vjp_F(grid, block, a):
    g, G, dF = a[:3]
    dF[:] = _vjp(ops.inner_product_all_pairs, (np.zeros((g.shape[0], G.shape[1]), G.dtype), G), 0, g)


def _ip_pairs_vjp_G(grid, block, a):
    g, F, dG = a[:3]
    dG[:] = _vjp(ops.inner_product_all_pairs, (F, np.zeros((g.shape[1], F.shape[1]), F.dtype)), 1, g)


def _bern_loglik(grid, block, a):
    x, l, out = a[:3]
    out[:] = ops.bernoulli_loglik(x, l)


def _bern_loglik_vjp(grid, block, a):
    x, l, g, dx, dl = a[:5]
    if dx is not None:
        dx[:] = _vjp(ops.bernoulli_loglik, (x, l), 0, g)
    if dl is not None:
        dl[:] = _vjp(ops.bernoulli_loglik, (x, l), 1, g)


def _gemm(ta, tb):
    def ref(grid, block, a):
        A, Bm, C, bias, E = a[:5]
        epi = {int(v): k for k, v in device_ops.EPILOGUES.items()}[int(a[-1])]
        device_ops.gemm(A, Bm, C, ta=ta, tb=tb, epilogue=epi, bias=bias, E=E)
    return ref


def _philox_normal(grid, block, a):
    out, state = a[:2]
    device_ops.philox_normal(out, state)


def _adam(grid, block, a):
    device_ops.adam_(*a[:6])


# kernel name prefix -> the .cu file that holds it
KERNEL_STEMS = (("ip_", "inner_product"), ("bern_", "bernoulli"), ("gemm_", "gemm"), ("philox_", "philox"),
                ("adam", "adam"))
REFERENCE = {"gemm_nn": _gemm(False, False), "gemm_nt": _gemm(False, True), "gemm_tn": _gemm(True, False),
             "philox_normal": _philox_normal, "adam": _adam,
             "ip_rows": _ip_rows, "ip_rows_vjp": _ip_rows_vjp, "ip_rows_logistic": _ip_rows_logistic,
             "ip_pairs": _ip_pairs, "ip_pairs_vjp_F": _ip_pairs_vjp_F, "ip_pairs_vjp_G": _ip_pairs_vjp_G,
             "bern_loglik": _bern_loglik, "bern_loglik_vjp": _bern_loglik_vjp}
