import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU and cupy (skipped elsewhere)")
    config.addinivalue_line("markers", "slow: longer than a few seconds")
