import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU and cupy (skipped elsewhere)")
    config.addinivalue_line("markers", "device: the device path, on a GPU where one is present, else on the "
                                       "strict stand-in (tests/strict_device.py)")
    config.addinivalue_line("markers", "slow: longer than a few seconds")
    # one marker per course task (pytest -m task3_1), from the manifest, so they cannot drift
    from avb_minimal.course.tasks import TASKS, marker_name
    for task_id, task in TASKS.items():
        config.addinivalue_line("markers", f"{marker_name(task_id)}: course task {task_id}, {task['title']} "
                                           f"(python -m avb_minimal assignments grade)")


@pytest.fixture
def device():
    """The device module of the device tests: cupy where a GPU is present, else the strict
    stand-in (tests/strict_device.py), whose arrays refuse what cupy refuses and whose kernel
    launches run the kernels' NumPy references (`device.kernels = "emulated"` runs the .cu
    files themselves through kernels/cuda_emulation.h)."""
    from avb_minimal import backend
    cupy = backend.cupy_module()
    if cupy is not None:
        yield cupy
        return
    import strict_device
    with strict_device.activate("reference") as strict:
        yield strict


@pytest.fixture
def smoke_table1(monkeypatch):
    """`reproduce table1 --quick` (and the self-check's quick Table 1) as a smoke run: the
    quick settings trained for SMOKE_ITERS iterations, so a command-line test takes seconds,
    not the minute of the README's main job.  Everything else (evaluation, table, figure,
    JSON) is the command's own."""
    from avb_minimal.experiments import table1 as T1
    quick_settings = T1.table1_settings
    monkeypatch.setattr(T1, "table1_settings",
                        lambda quick=False, iters=None: quick_settings(quick, iters or (T1.SMOKE_ITERS if quick else None)))
