"""The captured step's primitives: a kernel launch on device arrays, a NumPy form on host
arrays (the CPU path, and the reference the kernels are tested against).

- `gemm`: out = op(a) op(b) with a fused epilogue (bias, bias + ELU, ELU derivative, +=),
  kernels/gemm.cu;
- `philox_normal`: standard normal noise from Philox 4x32-10, seeded, kernels/philox.cu;
- `adam_`: one fused Adam step over a flat parameter buffer, kernels/adam.cu.

None of them calls cuBLAS or cuRAND: cupy refuses both while a stream is being captured into
a CUDA graph, so these (with cupy's elementwise ops and reductions) are what `fast.graph`
builds its step from.  Launches never allocate, copy to the host or synchronise.
"""
import numpy as np

from .. import backend
from ..nn import elu_, elu_grad_

EPILOGUES = {"store": 0, "accumulate": 1, "bias": 2, "bias_elu": 3, "elu_grad": 4}   # gemm.cu
GEMM_BLOCK = 16        # gemm: GEMM_BLOCK^2 threads, each 4 x 4 outputs of a 64 x 64 tile
FLAT_BLOCK = 256       # philox_normal, adam: threads per block (1-d)
_TILE_R, _MAX_GRID, _INT32_MAX = 4, 65535, 2 ** 31 - 1


def _i32(name, v):
    if not 0 <= v <= _INT32_MAX:
        raise ValueError(f"{name} = {v} does not fit the kernels' 32-bit size arguments")
    return np.int32(v)


def _launch(stem, name, grid, block, *args):
    backend.kernel(stem, name)(grid, block, args)


def _suffix(*arrays):
    dts = {a.dtype for a in arrays if a is not None}
    if len(dts) != 1 or next(iter(dts)) not in (np.float32, np.float64):
        raise ValueError(f"the kernels take arrays of one dtype, float32 or float64; got {sorted(map(str, dts))}")
    return "_f32" if next(iter(dts)) == np.float32 else "_f64"


def _strides(name, a):
    """(row stride, batch stride) in elements of a 2-d or 3-d operand whose last axis is contiguous."""
    s = [st // a.itemsize for st in a.strides]
    if a.shape[-1] > 1 and s[-1] != 1:
        raise ValueError(f"{name}: the last axis must be contiguous (strides {a.strides})")
    return s[-2], (s[0] if a.ndim == 3 else 0)


# ------------------------------------------------------------------ gemm
def gemm(a, b, out, *, ta=False, tb=False, epilogue="store", bias=None, E=None):
    """out <- epilogue(op(a) @ op(b)), op(a) = a^T where ta (a stored (k, m)), op(b) = b^T
    where tb (b stored (n, k)); out: (m, n), or (batch, m, n) with a, b batched alike.

    epilogue: 'store'; 'accumulate' (out += ...); 'bias' (+ bias, (n,) or (batch, n));
    'bias_elu' (elu(... + bias): a hidden layer); 'elu_grad' (* elu'(.) read from E = the
    ELU's output, shaped like out).  Operands may be views (row blocks, column slices,
    batch-strided views) as long as their last axis is contiguous.  Returns out."""
    if out.ndim not in (2, 3) or a.ndim != out.ndim or b.ndim != out.ndim:
        raise ValueError(f"gemm: a, b, out must all be 2-d or all 3-d, got {a.shape}, {b.shape}, {out.shape}")
    (m, n), k = out.shape[-2:], a.shape[-2] if ta else a.shape[-1]
    if (a.shape[-1] if ta else a.shape[-2]) != m or (b.shape[-2] if tb else b.shape[-1]) != n \
            or (b.shape[-1] if tb else b.shape[-2]) != k or not a.shape[:-2] == b.shape[:-2] == out.shape[:-2]:
        raise ValueError(f"gemm: shapes do not chain: a {a.shape}{'^T' if ta else ''}, "
                         f"b {b.shape}{'^T' if tb else ''}, out {out.shape}")
    if epilogue not in EPILOGUES:
        raise ValueError(f"gemm: epilogue must be one of {', '.join(EPILOGUES)}, got {epilogue!r}")
    if (bias is None) == (epilogue in ("bias", "bias_elu")) or (E is None) == (epilogue == "elu_grad"):
        raise ValueError(f"gemm: epilogue {epilogue!r} takes {'bias' if 'bias' in epilogue else 'E'}, "
                         "and only it")
    if backend.is_device_array(out):
        return _gemm_kernel(a, b, out, ta, tb, epilogue, bias, E, (m, n, k))
    xp = backend.array_module(out)
    opa, opb = (xp.swapaxes(a, -1, -2) if ta else a), (xp.swapaxes(b, -1, -2) if tb else b)
    if epilogue == "accumulate":
        out += xp.matmul(opa, opb)
        return out
    xp.matmul(opa, opb, out=out)
    if bias is not None:
        out += bias.reshape(out.shape[:-2] + (1, n)) if out.ndim == 3 else bias
    if epilogue == "bias_elu":
        elu_(out, xp.empty_like(out))
    elif epilogue == "elu_grad":
        elu_grad_(out, E, xp.empty_like(out))
    return out


def _gemm_kernel(a, b, out, ta, tb, epilogue, bias, E, mnk):
    sfx = _suffix(a, b, out, bias, E)
    (lda, sA), (ldb, sB), (ldc, sC) = _strides("a", a), _strides("b", b), _strides("out", out)
    if E is not None and (E.shape != out.shape or _strides("E", E) != (ldc, sC)):
        raise ValueError("gemm: E must be laid out as out")
    if bias is not None and not bias.flags.c_contiguous:
        raise ValueError("gemm: bias must be contiguous")
    m, n, k = mnk
    batch = out.shape[0] if out.ndim == 3 else 1
    if m == 0 or n == 0 or batch == 0:
        return out
    S = _TILE_R * GEMM_BLOCK
    grid = (min(-(-n // S), _MAX_GRID), min(-(-m // S), _MAX_GRID), min(batch, _MAX_GRID))
    name = "gemm_" + ("t" if ta else "n") + ("t" if tb else "n") + sfx
    sizes = [_i32(k_, v) for k_, v in (("m", m), ("n", n), ("k", k), ("lda", lda), ("ldb", ldb), ("ldc", ldc),
                                       ("batch", batch), ("sA", sA), ("sB", sB), ("sC", sC))]
    _launch("gemm", name, grid, (GEMM_BLOCK, GEMM_BLOCK), a, b, out, bias, E, *sizes,
            np.int32(EPILOGUES[epilogue]))
    return out


# ------------------------------------------------------------------ philox
PHILOX_M = (0xD2511F53, 0xCD9E8D57)      # multipliers
PHILOX_W = (0x9E3779B9, 0xBB67AE85)      # key schedule


def philox_state(seed, offset, xp=np):
    """The 4 x uint32 state of `philox_normal`: [seed_lo, seed_hi, offset_lo, offset_hi]."""
    s, o = int(seed) % 2 ** 64, int(offset) % 2 ** 64
    return xp.asarray(np.array([s & 0xFFFFFFFF, s >> 32, o & 0xFFFFFFFF, o >> 32], np.uint32))


def philox4x32_10(counters, key):
    """Philox 4x32-10 in NumPy: counters (G, 4) uint32, key (2,) -> (G, 4) uint32."""
    c = [counters[:, i].astype(np.uint64) for i in range(4)]
    k0, k1 = int(key[0]), int(key[1])
    lo32 = np.uint64(0xFFFFFFFF)
    for _ in range(10):
        p0, p1 = np.uint64(PHILOX_M[0]) * c[0], np.uint64(PHILOX_M[1]) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & lo32,
             (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & lo32]
        k0, k1 = (k0 + PHILOX_W[0]) & 0xFFFFFFFF, (k1 + PHILOX_W[1]) & 0xFFFFFFFF
    return np.stack(c, axis=1).astype(np.uint32)


def philox_normal(out, state):
    """out (1-d) <- standard normal draws determined by (seed, offset) in `state` and the
    element index alone (kernels/philox.cu: Philox 4x32-10, then Box-Muller).  Returns out."""
    if out.ndim != 1 or state.shape != (4,) or state.dtype != np.uint32:
        raise ValueError(f"philox_normal: out must be 1-d and state 4 x uint32, got {out.shape}, "
                         f"{state.shape} {state.dtype}")
    if backend.is_device_array(out):
        sfx = _suffix(out)
        n = _i32("n", out.size)
        if n:
            grid = (min(-(-n // (4 * FLAT_BLOCK)), _MAX_GRID),)
            _launch("philox", "philox_normal" + sfx, grid, (FLAT_BLOCK,), out, state, n)
        return out
    st, n, dt = state.astype(np.uint64), out.size, out.dtype.type
    q = np.arange((n + 3) // 4, dtype=np.uint64)
    ctr = np.stack([q & np.uint64(0xFFFFFFFF), q >> np.uint64(32), np.full_like(q, st[2]),
                    np.full_like(q, st[3])], axis=1)
    x = philox4x32_10(ctr, (st[0], st[1]))                                    # (G, 4)
    two_m32 = dt(2.3283064365386963e-10)
    u, w = (x[:, 0::2].astype(dt) + dt(1)) * two_m32, x[:, 1::2].astype(dt) * two_m32   # (G, 2) each
    r, angle = np.sqrt(dt(-2) * np.log(u)), np.pi * (2 * w.astype(np.float64))   # cospi, sinpi: exact angle
    z = np.stack([r * np.cos(angle).astype(dt), r * np.sin(angle).astype(dt)], axis=2).reshape(-1)
    out[:] = z[:n]
    return out


# ------------------------------------------------------------------ adam
def adam_hyper(opt, lr, t, dtype=np.float32):
    """The 6 values `adam_` reads, on the host: [step, b1, 1 - b1, b2, 1 - b2, eps], with
    step = lr sqrt(1 - b2^t) / (1 - b1^t) for step number t (as optim.adam_update_)."""
    step = lr * np.sqrt(1 - opt.b2 ** t) / (1 - opt.b1 ** t)
    return np.array([step, opt.b1, 1 - opt.b1, opt.b2, 1 - opt.b2, opt.eps], dtype)


def adam_(p, g, m, v, hyper, ok=None):
    """One Adam step in place over flat buffers, skipped where ok[0] == 0 (kernels/adam.cu):
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  p <- p - step m / (sqrt(v) + eps)."""
    if not (p.shape == g.shape == m.shape == v.shape and p.ndim == 1 and hyper.shape == (6,)):
        raise ValueError(f"adam_: p, g, m, v must be 1-d of one shape and hyper (6,), got "
                         f"{p.shape}, {g.shape}, {m.shape}, {v.shape}, {hyper.shape}")
    if backend.is_device_array(p):
        sfx = _suffix(p, g, m, v, hyper, ok)
        n = _i32("n", p.size)
        grid = (max(1, min(-(-n // FLAT_BLOCK), _MAX_GRID)),)
        _launch("adam", "adam" + sfx, grid, (FLAT_BLOCK,), p, g, m, v, hyper, ok, n)
        return p
    if ok is not None and not bool(ok[0]):
        return p
    step, b1, c1, b2, c2, eps = (hyper[i] for i in range(6))
    m *= b1
    m += g * c1
    v *= b2
    v += (g * g) * c2
    p += (m / (np.sqrt(v) + eps)) * -step
    return p
