"""Target densities: shapes, gradients, grid normalisers against closed forms, Eight Schools."""
import numpy as np
import pytest
from autograd import grad
from scipy import integrate, special, stats

from avb_minimal import targets as TG


@pytest.mark.parametrize("name", sorted(TG.TOYS))
def test_toys_map_batches_to_rows_and_have_finite_gradients(name, rng):
    t = TG.get_toy(name)
    z = rng.standard_normal((7, 2))
    lp = t.log_density(z)
    assert t.dim == 2 and lp.shape == (7,) and np.all(np.isfinite(lp))
    g = grad(lambda z: np.sum(t.log_density(z)))(z)
    eps = 1e-6                                            # central differences, float64
    fd = np.stack([(t.log_density(z + eps * e) - t.log_density(z - eps * e)) / (2 * eps)
                   for e in np.eye(2)], 1)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["warped_gaussian", "mixture"])
def test_grid_normaliser_matches_closed_form(name):
    t = TG.get_toy(name)
    assert t.log_z == 0.0
    assert abs(TG.log_normaliser(t, 400) - t.log_z) < 1e-4


def test_rosenbrock_normaliser_against_one_dimensional_integral():
    # exponent in z1 is -2 (z1 - (1 + z2^2)/2)^2 - (1 - z2^2)^2 / 2: integrate z1 in closed form
    z = np.sqrt(np.pi / 2) * integrate.quad(lambda u: np.exp(-0.5 * (1 - u * u) ** 2), -np.inf, np.inf)[0]
    assert abs(TG.log_normaliser(TG.rosenbrock(), 400) - np.log(z)) < 1e-5


def test_torus_normaliser_in_polar_coordinates():
    # Z = int 2 pi r exp(-(r^2 - 2)^2) dr = pi int_0^inf exp(-(u - 2)^2) du
    z = np.pi * np.sqrt(np.pi) / 2 * (1 + special.erf(2.0))
    assert abs(TG.log_normaliser(TG.torus(), 400) - np.log(z)) < 1e-5


def test_grid_samples_have_the_target_moments(rng):
    mean, cov = np.array([0.5, -1.0]), np.array([[1.0, 0.6], [0.6, 0.8]])
    t = TG.gaussian(mean, cov)
    s = TG.sample_grid(t, rng, 40000, n=400)
    np.testing.assert_allclose(s.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(s.T), cov, atol=0.04)


def test_bad_toy_name_and_grid_on_a_10d_target():
    with pytest.raises(ValueError, match="toy target must be one of"):
        TG.get_toy("banana")
    with pytest.raises(ValueError, match="2-d target"):
        TG.log_normaliser(TG.eight_schools())


def test_eight_schools_data_and_density(rng):
    t = TG.eight_schools()
    assert t.dim == 10 and t.labels[:3] == ("mu", "tau", "eta_1")
    assert TG.EIGHT_SCHOOLS_Y == (2.8, 0.8, -0.3, 0.7, -0.1, 0.1, 1.8, 1.2)
    assert TG.EIGHT_SCHOOLS_SIGMA == (0.8, 0.5, 0.8, 0.6, 0.5, 0.6, 0.5, 0.4)
    z = rng.standard_normal((5, 10))
    mu, tau, eta = z[:, 0], z[:, 1], z[:, 2:]
    y, s = np.array(TG.EIGHT_SCHOOLS_Y), np.array(TG.EIGHT_SCHOOLS_SIGMA)
    ref = (stats.norm.logpdf(y, mu[:, None] + tau[:, None] * eta, s).sum(1)
           + stats.norm.logpdf(z).sum(1))                 # N(0, 1) priors on all ten
    np.testing.assert_allclose(t.log_density(z), ref, rtol=1e-12)


def test_eight_schools_symmetry(rng):
    """(tau, eta) -> (-tau, -eta) leaves the density unchanged: the posterior is bimodal
    with exactly half its mass on tau < 0."""
    t = TG.eight_schools()
    z = rng.standard_normal((6, 10))
    f = TG.eight_schools_flip(z)
    np.testing.assert_array_equal(f[:, 0], z[:, 0])
    np.testing.assert_array_equal(f[:, 1:], -z[:, 1:])
    np.testing.assert_allclose(t.log_density(f), t.log_density(z), rtol=1e-12)
    np.testing.assert_array_equal(TG.eight_schools_flip(f), z)


def test_eight_schools_bad_data():
    with pytest.raises(ValueError, match="same length"):
        TG.eight_schools(y=(1.0, 2.0), sigma=(1.0,))
    with pytest.raises(ValueError, match="sigma must be positive"):
        TG.eight_schools(y=(1.0, 2.0), sigma=(1.0, 0.0))
