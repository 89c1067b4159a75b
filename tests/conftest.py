import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU and cupy (skipped elsewhere)")
    config.addinivalue_line("markers", "slow: longer than a few seconds")
    # one marker per course task (pytest -m task3_1), from the manifest, so they cannot drift
    from avb_minimal.assignments import TASKS, marker_name
    for task_id, task in TASKS.items():
        config.addinivalue_line("markers", f"{marker_name(task_id)}: course task {task_id}, {task['title']} "
                                           f"(python -m avb_minimal assignments grade)")
