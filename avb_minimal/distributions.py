"""Log-densities used by the objectives.  All return one value per row."""
from __future__ import annotations

import autograd.numpy as np

LOG_2PI = float(np.log(2 * np.pi))


def log_std_normal(z: np.ndarray) -> np.ndarray:
    """log N(z; 0, I): the prior p(z).  z: (B, d) -> (B,)."""
    return -0.5 * np.sum(z * z, axis=-1) - 0.5 * z.shape[-1] * LOG_2PI


def log_normal_diag(z: np.ndarray, mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """log N(z; mean, diag(exp(log_var))).  (B, d) x3 -> (B,)."""
    return -0.5 * np.sum((z - mean) ** 2 * np.exp(-log_var) + log_var + LOG_2PI, axis=-1)


def kl_diag_normal_std(mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """KL(N(mean, diag(exp(log_var))) || N(0, I)) in closed form: the KL of eq. (2.1)
    for a Gaussian encoder.  (B, d) x2 -> (B,)."""
    return 0.5 * np.sum(np.exp(log_var) + mean ** 2 - 1.0 - log_var, axis=-1)
