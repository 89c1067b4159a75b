"""Course task 5.3: the body of the row-wise inner-product kernel (`row_dot` in
kernels/inner_product.cu), compiled unchanged with g++ through kernels/cuda_emulation.h and
checked against NumPy on any CPU (tests/strict_device.py builds and launches it).

In a student tree the body is `__trap();`: the emulated launch reports it, and the test
says which task it is.  Small blocks: every CUDA thread is an OS thread here."""
import numpy as np
import pytest
import strict_device
from reference_values import expect

from avb_minimal import ops

pytestmark = pytest.mark.skipif(strict_device.GXX is None, reason="g++ is not on the PATH")
TASK = "Task 5.3: the row-wise inner-product CUDA kernel (see handouts/task_5_3.md)"


def _launch(name, dt, grid, block, *args):
    fn = strict_device.compile_emulated()["inner_product"].get_function(
        name + ("_f32" if dt == np.float32 else "_f64"))
    try:
        fn(grid, block, args)
    except strict_device.KernelTrap as e:
        raise NotImplementedError(TASK) from e


@pytest.mark.task5_3
@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("shape,block,grid", [((1823, 781), (8, 8), (5,)),    # grid-stride over rows
                                              ((37, 5), (16, 4), (3,)),       # H < threads per row
                                              ((3, 70), (4, 2), (9,)),        # more blocks than rows
                                              ((1, 1), (1, 1), (1,))])
def test_row_kernel_matches_numpy(rng, dt, shape, block, grid):
    B, H = shape
    F, G = rng.standard_normal(shape).astype(dt), rng.standard_normal(shape).astype(dt)
    ref = expect("row_dot", F=F, G=G)["T"]                       # float64
    T = np.full(B, np.nan, dt)
    _launch("ip_rows", dt, grid, block, F, G, T, np.int32(B), np.int32(H))
    tol = 2e-4 if dt == np.float32 else 1e-10
    assert np.allclose(T, ref, rtol=tol, atol=tol)


@pytest.mark.task5_3
def test_the_fused_logistic_kernel_uses_the_same_rows(rng):
    """ip_rows_logistic (eq. 3.3, fused) calls row_dot too: its loss at label 0 is softplus(T)
    (the NumPy form of the fused op, `ops.inner_product_logistic`, no task's code)."""
    B, H = 203, 33
    F, G = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    loss, dT = np.full(B, np.nan), np.full(B, np.nan)
    _launch("ip_rows_logistic", np.float64, (4,), (8, 4), F, G, None, np.int32(0), loss, dT,
            np.int32(B), np.int32(H))
    assert np.allclose(loss, ops.inner_product_logistic(F, G, None, 0), rtol=1e-10, atol=1e-10)
