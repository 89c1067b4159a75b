"""Chapter 14 - the kernels: the batched inner-product adversary on a GPU, and on any CPU.

Paper: Mescheder, Nowozin & Geiger, "Adversarial Variational Bayes", ICML 2017, sec. 5.2:
the adversary T(x, z) = <f(x), g(z)> (+ the folded prior).  Its hot loops are two kernels of
kernels/inner_product.cu, written in the manner of the Triton tutorials: first what each
program instance computes, as pseudocode, then the CUDA code and its thread-to-data mapping.

Row-wise logits, T_i = <F_i, G_i>   (F, G: (B, H) -> T: (B,)):

    for each block b, rows row0 = b * by, b * by + gridDim * by, ...   (grid-stride)
        row = row0 + ty                      # by rows per block, one per threadIdx.y
        acc = sum over h = tx, tx + bx, ... < H of F[row, h] * G[row, h]
                                             # bx threads per row, neighbours read neighbours
        T[row] = tree-reduce acc over the bx threads of the row (shared memory)

All-pairs logits, T_ij = <F_i, G_j> = (F G^T)_ij   (F: (B, H), G: (M, H) -> (B, M)):

    for each block (bx, by): an S x S tile of T, S = 4 t (t x t threads)
        acc[4][4] = 0                        # thread (tx, ty) owns rows ty + a t, cols tx + b t
        for l0 in 0, 16, 32, ... < H:
            stage F[tile rows, l0:l0+16] and G[tile cols, l0:l0+16] in shared memory
            acc[a][b] += sum over c < 16 of Fs[ty + a t, c] * Gs[tx + b t, c]
        write acc to T

The .cu code of the row-wise kernel (row_dot in kernels/inner_product.cu) is printed below.
It runs unchanged on the CPU through kernels/cuda_emulation.h (one std::thread per CUDA
thread, a std::barrier for __syncthreads), as the test suite runs it, and through cupy on a
GPU where one is present.  Both are asserted against NumPy and timed.

Run:  python chapters/14_kernels.py --quick     (seconds)
      python chapters/14_kernels.py             (larger shapes)
"""
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from avb_minimal import backend, ops  # noqa: E402
from avb_minimal.chapter import chapter_args  # noqa: E402
from avb_minimal.fast.emulate import compile_emulated  # noqa: E402   the .cu on the CPU, as the tests run it

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, os.pardir, "runs", "chapters")

WHAT_GOES_WRONG = """What goes wrong
- A thread that returns early (row >= B) before row_sum never reaches its __syncthreads:
  on a GPU the block hangs or reads garbage; in the emulation the barrier waits forever.
  Rows past B must add 0 and still call row_sum.
- Indexing F[row * H + h] in 32 bits overflows past 2^31 elements: the offsets are long long.
- A grid smaller than the rows is correct only because of the grid-stride loop: drop it and
  rows past gridDim * by are never written (the tests launch small grids on purpose).
- Emulated timings are CPU threads, not GPU warps: they check correctness, not speed."""


def parse_args(argv=None):
    return chapter_args("Chapter 14: the kernels, row-wise and all-pairs, emulated on the CPU.",
                        "small shapes (seconds; for tests)", "larger shapes", DEFAULT_OUT, argv)


def row_dot_source():
    with open(os.path.join(backend.kernels_dir(), "inner_product.cu"), encoding="utf-8") as fh:
        text = fh.read()
    start = text.index("template <typename T>\n__device__ T row_dot")
    return text[start:text.index("}\n", text.index("return row_sum", start)) + 2]


def launch(mod, name, grid, block, *args):
    t0 = time.perf_counter()
    mod.get_function(name)(grid, block, args)
    return time.perf_counter() - t0


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    print("The row-wise kernel's device function (kernels/inner_product.cu):\n")
    print(row_dot_source())
    mod = compile_emulated()["inner_product"]
    rows = [(64, 33), (512, 129), (1823, 781)] if not args.quick else [(64, 33), (300, 101)]
    times = []
    for B, H in rows:                                         # %% row-wise, asserted and timed
        F, G = rng.standard_normal((B, H)), rng.standard_normal((B, H))
        T = np.full(B, np.nan)
        t_emu = launch(mod, "ip_rows_f64", (max(1, B // 64),), (8, 8), F, G, T, np.int32(B), np.int32(H))
        t0 = time.perf_counter()
        ref = ops.inner_product_rows(F, G)
        t_np = time.perf_counter() - t0
        assert np.allclose(T, ref, rtol=1e-12, atol=1e-12)
        times.append(("rows", B * H, t_emu, t_np))
        print(f"ip_rows   B={B:5d} H={H:4d}: emulated {t_emu * 1e3:8.2f} ms, NumPy {t_np * 1e3:6.3f} ms  [ok]")
    for B, M, H in ([(61, 37, 45), (200, 150, 64)] if args.quick else [(61, 37, 45), (256, 256, 128)]):
        F, G = rng.standard_normal((B, H)), rng.standard_normal((M, H))
        T = np.full((B, M), np.nan)
        t_emu = launch(mod, "ip_pairs_f64", (2, 2), (4, 4), F, G, T, np.int32(B), np.int32(M), np.int32(H))
        t0 = time.perf_counter()
        ref = ops.inner_product_all_pairs(F, G)
        t_np = time.perf_counter() - t0
        assert np.allclose(T, ref, rtol=1e-12, atol=1e-12)
        times.append(("pairs", B * M * H, t_emu, t_np))
        print(f"ip_pairs  B={B:4d} M={M:4d} H={H:4d}: emulated {t_emu * 1e3:8.2f} ms, NumPy {t_np * 1e3:6.3f} ms  [ok]")
    cupy = backend.cupy_module()
    if cupy is not None:                                      # %% the same kernels on a GPU
        F, G = rng.standard_normal((4096, 512)), rng.standard_normal((4096, 512))
        Fd, Gd = cupy.asarray(F), cupy.asarray(G)
        ops.inner_product_rows(Fd, Gd)
        cupy.cuda.Device().synchronize()
        t0 = time.perf_counter()
        Td = ops.inner_product_rows(Fd, Gd)
        cupy.cuda.Device().synchronize()
        print(f"GPU ip_rows 4096 x 512: {(time.perf_counter() - t0) * 1e6:.0f} us  [ok]")
        assert np.allclose(cupy.asnumpy(Td), ops.inner_product_rows(F, G))
    else:
        print("no GPU here: the cupy launch is skipped (the emulated launches above ran the same .cu)")

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, marker in (("rows", "o"), ("pairs", "s")):
        pts = [(n, te, tn) for k, n, te, tn in times if k == kind]
        ax.loglog([p[0] for p in pts], [p[1] * 1e3 for p in pts], marker + "-", label=f"{kind}: emulated .cu (CPU threads)")
        ax.loglog([p[0] for p in pts], [p[2] * 1e3 for p in pts], marker + "--", label=f"{kind}: NumPy")
    ax.set_xlabel("multiply-adds"), ax.set_ylabel("ms"), ax.legend(fontsize=8)
    ax.set_title("Chapter 14: emulated kernels vs NumPy (asserted equal)", fontsize=10)
    path = os.path.join(args.out, "14_kernels.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"figure: {path}")
    print(WHAT_GOES_WRONG)
    return 0


if __name__ == "__main__":
    sys.exit(main())
