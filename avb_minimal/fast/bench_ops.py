"""`python -m avb_minimal bench ops`: each hot op against the naive composition it replaces.

For each op and each backend present (numpy always, cupy where a GPU is), the time
per call over B in {64, 512, 4096} x H in {64, 512, 1024} (float32, the training
dtype), next to the naive NumPy / CuPy composition, and the rate reached: GB/s of
memory traffic for the row-wise ops (Bernoulli, row-wise logits, fused eq. 3.3 loss)
and GFLOP/s for the all-pairs logits, as fractions of this machine's measured
references: a 2048^3 float32 matrix product for the all-pairs logits, and on a GPU
a 128 MiB device copy for the row-wise ops (on a CPU those sizes sit in cache, so
a DRAM fraction would mean nothing and is left out).

Naive all-pairs (einsum's own loop, no BLAS) at the largest sizes would take tens of
seconds a call: where B*M*H > 2^28 it is timed on the first rows of F only and scaled
by B / rows (its cost is linear in B), and the entry says `naive_rows_timed`.
"""
import platform
import time

import numpy as np

from .. import backend, ops

BATCH_SIZES = (64, 512, 4096)
WIDTHS = (64, 512, 1024)
_NAIVE_BUDGET = 2 ** 28        # multiply-adds per naive all-pairs call actually timed


def _sync(xp):
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def _time_per_call(fn, xp, min_time, repeats=5):
    """Seconds per call: the best of `repeats` runs of n calls each, n chosen so that a
    run lasts >= min_time (the best, not the mean: other processes only ever add time)."""
    fn()                                                       # warm up (and compile, on a GPU)
    _sync(xp)
    n, best = 1, float("inf")
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(xp)
        dt = time.perf_counter() - t0
        if dt >= min_time or n >= 2 ** 16:
            break
        n *= max(2, int(min_time / max(dt, 1e-9)))
    best = dt / n
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(xp)
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def _references(xp, min_time):
    """This machine's measured copy bandwidth (GB/s) and float32 matrix rate (GFLOP/s)."""
    a = xp.ones(2 ** 25, np.float32)                           # 128 MiB
    b = xp.empty_like(a)
    copy = _time_per_call(lambda: b.__setitem__(Ellipsis, a), xp, min_time)
    m = xp.ones((2048, 2048), np.float32)
    mm = _time_per_call(lambda: xp.dot(m, m), xp, min_time)
    return {"copy_gbytes_per_s": 2 * a.nbytes / copy / 1e9, "matmul_gflops": 2 * 2048 ** 3 / mm / 1e9}


def _naive_pairs(xp):
    if xp is np:
        return ops.inner_product_all_pairs_naive
    return lambda F, G: (F[:, None, :] * G[None, :, :]).sum(-1)   # the broadcast composition


def _cases(xp, rng, B, H):
    """(op name, fast fn, naive fn, inputs, bytes moved, flops, rows of F the naive form may use).
    The naive forms are NumPy calls, which run on cupy arrays as they are (NEP 18)."""
    f32 = np.float32
    F, G = (xp.asarray(rng.standard_normal((B, H)).astype(f32)) for _ in range(2))
    c = xp.asarray(rng.standard_normal(B).astype(f32))
    x = xp.asarray((rng.random((B, H)) < 0.5).astype(f32))
    row_bytes = 2 * B * H * 4 + B * 4
    naive_rows = max(1, min(B, _NAIVE_BUDGET // (B * H)))      # all-pairs naive: rows timed
    return [
        ("inner_product_rows", ops.inner_product_rows, ops.inner_product_rows_naive, (F, G),
         row_bytes, 2 * B * H, B),
        ("inner_product_all_pairs", ops.inner_product_all_pairs, _naive_pairs(xp), (F, G),
         3 * B * H * 4 + B * B * 4, 2 * B * B * H, naive_rows),
        ("inner_product_logistic", lambda F, G, c: ops.inner_product_logistic(F, G, c, 1),
         lambda F, G, c: ops.inner_product_logistic_naive(F, G, c, 1), (F, G, c),
         row_bytes + 2 * B * 4, 2 * B * H, B),
        ("bernoulli_loglik", ops.bernoulli_loglik, ops.bernoulli_loglik_naive, (x, F), row_bytes, 0, B),
    ]


def bench_ops(batch_sizes=BATCH_SIZES, widths=WIDTHS, min_time=0.05, seed=0):
    """Time every hot op against its naive composition on every backend present.

    Returns a JSON-able dict: {'dtype', 'backends': {name: {'device', 'reference',
    'results': [entry, ...]}}}, an entry being {'op', 'B', 'H', 'M', 'ms', 'naive_ms',
    'speedup', 'gbytes_per_s' or 'gflops', 'fraction_of_bandwidth' or
    'fraction_of_matrix_rate', and 'naive_rows_timed' where the naive time is scaled}.
    """
    rng = np.random.default_rng(seed)
    modules = {"numpy": np}
    if backend.cupy_module() is not None:
        modules["cupy"] = backend.cupy_module()
    out = {"dtype": "float32", "batch_sizes": list(batch_sizes), "widths": list(widths), "backends": {}}
    for name, xp in modules.items():
        ref = _references(xp, min_time)
        results = []
        for B in batch_sizes:
            for H in widths:
                for op, fast, naive, args, nbytes, flops, n_naive in _cases(xp, rng, B, H):
                    t = _time_per_call(lambda: fast(*args), xp, min_time)
                    part = (args[0][:n_naive],) + tuple(args[1:])
                    with np.errstate(all="ignore"):
                        tn = _time_per_call(lambda: naive(*part), xp, min_time) * B / n_naive
                    e = {"op": op, "B": B, "H": H, "M": B if op.endswith("all_pairs") else None,
                         "ms": 1e3 * t, "naive_ms": 1e3 * tn, "speedup": tn / t}
                    if n_naive < B:
                        e["naive_rows_timed"] = n_naive
                    if op.endswith("all_pairs"):
                        e["gflops"] = flops / t / 1e9
                        e["fraction_of_matrix_rate"] = e["gflops"] / ref["matmul_gflops"]
                    else:
                        e["gbytes_per_s"] = nbytes / t / 1e9
                        if xp is not np:     # on a CPU these sizes sit in cache: no DRAM fraction
                            e["fraction_of_bandwidth"] = e["gbytes_per_s"] / ref["copy_gbytes_per_s"]
                    results.append(e)
        out["backends"][name] = {"device": device_name(xp), "reference": ref, "results": results,
                                 "slowest_speedup": min(e["speedup"] for e in results)}
    return out


def device_name(xp):
    """The GPU's name as the driver reports it, or the CPU's with the NumPy version."""
    if xp is np:
        return f"CPU ({platform.processor() or platform.machine()}), NumPy {np.__version__}"
    props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def format_bench_ops(result):
    """The result of bench_ops as a printable table, one block per backend."""
    lines = []
    for name, r in result["backends"].items():
        ref = r["reference"]
        lines.append(f"{name}: {r['device']}; {result['dtype']}; reference: copy "
                     f"{ref['copy_gbytes_per_s']:.1f} GB/s, matmul {ref['matmul_gflops']:.1f} GFLOP/s")
        lines.append(f"{'op':<24} {'B':>5} {'H':>5} {'ms/call':>9} {'naive ms':>9} {'speedup':>8} "
                     f"{'rate':>14} {'of ref':>7}")
        for e in r["results"]:
            if "gflops" in e:
                rate, frac = f"{e['gflops']:.1f} GFLOP/s", e["fraction_of_matrix_rate"]
            else:
                rate, frac = f"{e['gbytes_per_s']:.2f} GB/s", e.get("fraction_of_bandwidth")
            star = "*" if "naive_rows_timed" in e else " "
            lines.append(f"{e['op']:<24} {e['B']:>5} {e['H']:>5} {e['ms']:>9.3f} {e['naive_ms']:>8.3f}{star} "
                         f"{e['speedup']:>7.2f}x {rate:>14} {'-' if frac is None else f'{frac:.1%}':>7}")
        lines.append(f"slowest speedup over the naive form: {r['slowest_speedup']:.2f}x")
        lines.append("")
    lines.append("all-pairs: M = B; rate as a fraction of the measured matmul.  Row-wise ops: GB/s read "
                 "and written, as a fraction of the measured device copy (GPU only).\n"
                 "* naive time measured on the first rows of F and scaled by B / rows.")
    return "\n".join(lines)
