"""The instructor's reference formulas: what the tests' expected values are, written out in
float64 (autograd.numpy where a test needs a gradient).  Several of them *are* a course
task's answer in another form, so this file never reaches a student tree: there,
tests/reference_values.py looks the values up in tests/reference_values.npz instead.

Each formula takes the case's inputs as keywords and returns {output name: array}; it calls
the library only for what no task blanks (activations, the closed-form KL, the noise-basis
encoder's sampling), so a student's wrong answer cannot move the reference it is graded by.

    python tests/reference_formulas.py OUT.npz    # the store a student tree gets

runs the tests that call `expect` (found by reading the test files) with the solution tree's
code and AVB_RECORD_REFERENCES=OUT.npz, which records the case each asks for and stops the
test there (the store needs the inputs, not the rest of the test);
`python -m avb_minimal assignments build` does this for each tree it writes.
"""
import ast
import os
import subprocess
import sys

import autograd.numpy as anp
import numpy as np
from autograd import grad
from scipy import integrate
from scipy.optimize import minimize

from avb_minimal import models as M
from avb_minimal.distributions import kl_diag_normal_std
from avb_minimal.nn import get_activation

HERE = os.path.dirname(os.path.abspath(__file__))


# ------------------------------------------------------------------ building blocks
def _mlp(params, h, act):
    """h -> act(h W1 + b1) -> ... -> h WL + bL."""
    f = get_activation(act) if isinstance(act, str) else act
    for i, (W, b) in enumerate(params):
        h = anp.dot(h, W) + b
        if i < len(params) - 1:
            h = f(h)
    return h


def _softplus(t):
    return anp.logaddexp(0.0, t)


def _bernoulli(x, l):
    """sum_d x_d l_d - softplus(l_d), float64."""
    return anp.sum(x * l - _softplus(l), axis=-1)


def _sigmoid(t):
    return 0.5 * (np.tanh(0.5 * t) + 1)


def _f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


# ------------------------------------------------------------------ task 0.1
def mlp(params, x, act):
    """The whole net, and its first layer alone (an affine map: a one-layer net)."""
    params, x = [tuple(_f64(W, b)) for W, b in params], np.asarray(x, np.float64)
    return {"out": _mlp(params, x, act), "first_layer": _mlp(params[:1], x, act)}


# ------------------------------------------------------------------ tasks 0.2, 0.3
def bernoulli_loglik(x, l):
    x, l = _f64(x, l)
    return {"loglik": _bernoulli(x, l)}


def bernoulli_vjp(x, l, g):
    x, l, g = _f64(x, l, g)
    return {"dx": g[:, None] * l, "dl": g[:, None] * (x - _sigmoid(l))}


# ------------------------------------------------------------------ task 2.1
def vae_elbo(params, x, eps, arch):
    x, eps = _f64(x, eps)
    out = _mlp(params["enc"], x, arch.activation)
    dz = out.shape[1] // 2
    mean, log_var = out[:, :dz], out[:, dz:]
    z = mean + np.exp(0.5 * log_var) * eps
    elbo = _bernoulli(x, _mlp(params["dec"], z, arch.activation)) - kl_diag_normal_std(mean, log_var)
    return {"elbo": elbo, "loss": -np.mean(elbo)}


# ------------------------------------------------------------------ tasks 3.1, 3.2, 4.1
def adversary_loss(T_pos, T_neg):
    """-(3.3): -log sigma(T) = softplus(-T) on q's pairs, -log(1 - sigma(T)) = softplus(T) on p's."""
    return {"loss": np.mean(np.logaddexp(0, -T_pos)) + np.mean(np.logaddexp(0, T_neg))}


def generator_objective(T, ll):
    f = lambda T: anp.mean(-T + ll)  # noqa: E731
    return {"value": f(T), "grad_T": grad(f)(T)}


def adaptive_contrast(z, mean, var, floor, T, ll, lp):
    norm = lambda z, var: (z - mean) / anp.sqrt(var + floor)  # noqa: E731
    z_bar = norm(z, var)
    f = lambda T, zb: anp.mean(-T + 0.5 * anp.sum(zb ** 2, 1) + ll + lp)  # noqa: E731
    return {"z_bar": z_bar, "z_bar_no_var": norm(z, np.zeros_like(var)),
            "grad_z": grad(lambda z: anp.sum(norm(z, var)))(z),
            "objective": f(T, z_bar), "grad_z_bar": grad(f, 1)(T, z_bar)}


# ------------------------------------------------------------------ task 5.1
def knn_kl(x, y, k):
    """Wang, Kulkarni & Verdu (2009), distances by brute force."""
    (n, d), m = x.shape, y.shape[0]
    dxx = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(dxx, np.inf)                                  # x_i is not its own neighbour
    rho = np.sort(dxx, axis=1)[:, k - 1]
    nu = np.sort(np.linalg.norm(x[:, None] - y[None], axis=-1), axis=1)[:, k - 1]
    return {"kl": d * np.mean(np.log(nu / rho)) + np.log(m / (n - 1))}


# ------------------------------------------------------------------ tasks 5.2, 5.3
def inner_products(F, G, G2):
    F, G, G2 = _f64(F, G, G2)
    return {"rows": np.einsum("bh,bh->b", F, G), "pairs": np.einsum("bh,mh->bm", F, G2)}


def row_dot(F, G):
    F, G = _f64(F, G)
    return {"T": np.einsum("bh,bh->b", F, G)}


# ------------------------------------------------------------------ evaluation
def exact_ll_quadrature(a, c, x):
    """log p(x) for a decoder with logits a z_1 + c, by 1-d quadrature over z_1."""
    out = []
    for xi in x:
        def integrand(z1):
            return np.exp(_bernoulli(xi, a * z1 + c)) * np.exp(-0.5 * z1 * z1) / np.sqrt(2 * np.pi)
        out.append(np.log(integrate.quad(integrand, -12, 12, epsabs=1e-13)[0]))
    return {"log_px": np.array(out)}


# ------------------------------------------------------------------ the propositions' model
def _prop_elbo(p, x, eps, arch):
    """eq. (2.1)-(2.4) in closed form for the implicit encoder z = x w + s eps + b of
    tests/test_propositions.py: q(z|x) = N(x w + b, s^2); E log p(x|z) (same noise) - KL."""
    (W, b), = p["enc"]
    mean = anp.dot(x, W[:4]) + b
    log_var = 2 * anp.log(anp.abs(W[4])) * anp.ones_like(mean)
    z = mean + anp.exp(0.5 * log_var) * eps
    return anp.mean(_bernoulli(x, _mlp(p["dec"], z, arch.activation)) - kl_diag_normal_std(mean, log_var))


def prop_elbo_grad(p, x, eps, arch):
    g = grad(_prop_elbo)(p, x, eps, arch)
    return {part: np.concatenate([np.ravel(w) for w in g[part][0]]) for part in ("enc", "dec")}


def prop_elbo_optimum(p, x, eps, arch):
    """(theta*, phi*): the ELBO's maximum for this model on the sample (scipy BFGS)."""
    keys = [("enc", 0), ("dec", 0)]
    shapes = [(p[k][i][0].shape, p[k][i][1].shape) for k, i in keys]

    def unpack(v):
        out, o = dict(p), 0
        for (k, i), (sw, sb) in zip(keys, shapes):
            nw, nb = int(np.prod(sw)), int(np.prod(sb))
            out[k] = [(anp.reshape(v[o:o + nw], sw), v[o + nw:o + nw + nb])]
            o += nw + nb
        return out
    v0 = np.concatenate([np.concatenate([np.ravel(p[k][i][0]), p[k][i][1]]) for k, i in keys])
    f = lambda v: -_prop_elbo(unpack(v), x, eps, arch)  # noqa: E731
    r = minimize(f, v0, jac=grad(f), method="BFGS", options={"gtol": 1e-9, "maxiter": 2000})
    q = unpack(r.x)
    return {"enc_W": q["enc"][0][0], "enc_b": q["enc"][0][1], "dec_W": q["dec"][0][0], "dec_b": q["dec"][0][1]}


def ac_elbo_grad(enc, dec, x, eps, arch):
    """The a-net's gradient of the ELBO of a Gaussian q = N(mean, var) with the population
    moments of eq. (III.2)-(III.3) (linear basis nets), same samples as the encoder's."""
    def elbo(enc):
        out = _mlp(enc["a"], x, arch.activation)                 # (B, (m + 1) dz)
        z0, a_ = out[:, :1], anp.reshape(out[:, 1:], (-1, 3, 1))
        (W1, b1), (W2, b2) = enc["v"]                            # v_i = (eps W1_i + b1_i) W2_i + b2_i
        v_mean = (b1[:, 0] * W2[:, 0] + b2[:, 0])[None]          # (1, m, dz)
        v_var = ((W1[:, 0, 0] * W2[:, 0, 0])[:, None] ** 2)[None]
        mean, var = z0 + anp.sum(a_ * v_mean, 1), anp.sum(a_ ** 2 * v_var, 1)
        z, _, _ = M.noise_basis_encoder(enc, x, eps, arch.act)
        return anp.mean(_bernoulli(x, _mlp(dec, z, arch.activation)) - kl_diag_normal_std(mean, anp.log(var)))
    g = grad(elbo)(enc)
    return {"a": np.concatenate([np.ravel(w) for W, b in g["a"] for w in (W, b)])}


FORMULAS = {f.__name__: f for f in (
    mlp, bernoulli_loglik, bernoulli_vjp, vae_elbo, adversary_loss, generator_objective, adaptive_contrast, knn_kl,
    inner_products, row_dot, exact_ll_quadrature, prop_elbo_grad, prop_elbo_optimum, ac_elbo_grad)}


# ------------------------------------------------------------------ the store
def tests_that_expect(tests_dir=HERE):
    """'tests/test_x.py::test_y' for every test function that calls `expect(...)`: once, and
    before anything slow (recording stops the test there)."""
    found = []
    for fn in sorted(os.listdir(tests_dir)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        with open(os.path.join(tests_dir, fn), encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                calls = sum(isinstance(c, ast.Call) and getattr(c.func, "id", getattr(c.func, "attr", None))
                            == "expect" for c in ast.walk(node))
                if calls > 1:
                    raise ValueError(f"tests/{fn}::{node.name} calls expect() {calls} times; a test asks for "
                                     f"one reference case (recording stops the test at its first)")
                if calls:
                    found.append(f"tests/{fn}::{node.name}")
    return found


def write_store(out, root=os.path.dirname(HERE), python=sys.executable, timeout=900):
    """Run the tests that call `expect` in the checkout `root` with AVB_RECORD_REFERENCES=out."""
    ids = tests_that_expect(os.path.join(root, "tests"))
    env = dict(os.environ, PYTHONPATH=root, PYTHONDONTWRITEBYTECODE="1", AVB_RECORD_REFERENCES=os.path.abspath(out))
    r = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *ids], cwd=root,
                       env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if r.returncode != 0 or not os.path.isfile(out):
        raise RuntimeError(f"recording the reference values failed (pytest exit {r.returncode}):\n"
                           f"{(r.stdout + r.stderr)[-3000:]}")
    return ids


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/reference_formulas.py OUT.npz")
    print(f"recorded the cases of {len(write_store(sys.argv[1]))} tests into {sys.argv[1]}")
