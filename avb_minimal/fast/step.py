"""Algorithm 1 / 2 by hand: one AVB training step without autograd (the fast path).

The readable path (`objectives.avb_losses` + `autograd.grad`, in `train.make_step`)
states the algorithm; this module computes *the same three gradients* with the
forward and backward passes written out, for the paper's inner-product adversary
T(x, z) = <f(x), g(z)> + ||z||^2 / 2 (with sec. 5.2's r(x) + s(z) as padded features).  What that buys (README, "Performance"):

1. One pass of g serves both players.  g runs once on [z_q; z_p].  The generator's
   cotangent on g(z_q) is (1/B) f(x) row by row, the adversary's is w_i f(x_i) with
   w_i = dL_adv/dT_i: both are the *same rows F scaled per row*, and a backward pass
   is linear in each row's cotangent.  So g's backward runs once with F on the
   q-rows; the adversary's weight gradients scale each row by w_i (gW = (w h)^T d),
   the generator's dz reads the unscaled rows.  No second forward with psi frozen,
   no second backward.
2. No gradient the update does not use: no d/dx (data), no d/deps (noise), no
   d/dz_p (prior samples), no psi-gradient of the generator's loss.
3. Preallocated buffers (`Workspace`): activations, cotangents and gradients live
   in arrays allocated at the first step and reused; matrix products write into
   them with `np.dot(..., out=)`.  Gradients are written straight into one flat
   buffer per player, so Adam (`optim.adam_update_`) is a dozen in-place vector
   operations over all parameters.
4. Fused elementwise work: ELU forward/backward in place (`nn.elu_`, `nn.elu_grad_`),
   softplus and sigmoid of eq. (3.3) from one exp (`ops.softplus_sigmoid`), the
   Bernoulli log-likelihood and its gradient from one exp
   (`ops.bernoulli_loglik_grad`).

Parameters stay the usual pytrees: the step hands back views into its flat
buffers (updated in place), so checkpoints, evaluation and the chapters see the
same structures as with the readable path.  tests/test_fast_path.py checks that
the gradients, losses and updates equal the readable path's.
"""
import math

import numpy as np

from .. import models as M
from ..backend import array_module
from ..nn import elu_, elu_grad_
from ..ops import bernoulli_loglik_grad, rowdot, softplus_sigmoid
from ..optim import Adam, adam_update_, flatten_to_vector, vector_to_tree
from ..trees import tree_flatten


def supports(kind, arch):
    """Why the fast path cannot run this model ('' when it can)."""
    if kind not in ("avb", "avb_ac"):
        return f"kind {kind!r} (the fast path implements Algorithms 1 and 2: 'avb', 'avb_ac')"
    if arch.adversary != "inner":
        return "the residual adversary (the fast path needs the inner-product adversary)"
    if arch.activation != "elu":
        return f"activation {arch.activation!r} (the fast path is written for ELU)"
    return ""


class Workspace:
    """Named arrays allocated on first use and reused at every later step, on the device of
    the parameters (`xp`, set when the step first sees them)."""

    def __init__(self, dtype=np.float32, xp=np):
        self.dtype, self.arrays, self.xp = dtype, {}, xp

    def __call__(self, name, shape):
        a = self.arrays.get(name)
        if a is None or a.shape != tuple(shape):
            a = self.arrays[name] = self.xp.empty(shape, self.dtype)
        return a


def _einsum_into(spec, a, b, out):
    """out[...] = einsum(spec, a, b): in place with NumPy; cupy's einsum has no out=."""
    if array_module(out) is np:
        np.einsum(spec, a, b, out=out)
    else:
        out[...] = np.einsum(spec, a, b)


class FlatParams:
    """One player's parameters in a flat buffer, with a pytree of views into it
    (`tree`) and a gradient buffer with the same layout (`grad`, `grad_tree`)."""

    def __init__(self, tree):
        self.flat = flatten_to_vector(tree).astype(np.float32)
        self.tree = vector_to_tree(self.flat, tree)
        self.grad = np.zeros_like(self.flat)
        self.grad_tree = vector_to_tree(self.grad, tree)
        self.scratch = np.empty_like(self.flat)          # Adam's temporary

    def owns(self, tree):
        return all(a is b for a, b in zip(tree_flatten(tree), tree_flatten(self.tree)))

    def load(self, tree):
        self.flat[:] = flatten_to_vector(tree)


# ------------------------------------------------------------------ MLP by hand
def mlp_forward(ws, name, layers, h):
    """h -> elu(h W1 + b1) -> ... -> h WL + bL (as `nn.mlp`), into workspace buffers.
    Returns (inputs of each layer [h, h1, ..., h_{L-1}], output)."""
    hs = [h]
    ### BEGIN SOLUTION task 0.1: the MLP forward pass
    for i, (W, b) in enumerate(layers):
        out = ws(f"{name}/a{i}", (h.shape[0], W.shape[1]))   # (rows, n_out)
        np.dot(h, W, out=out)
        out += b
        if i < len(layers) - 1:
            elu_(out, ws(f"{name}/tmp{i}", out.shape))
            hs.append(out)
        h = out
    ### END SOLUTION
    return hs, h


def mlp_backward(ws, name, layers, grads, hs, d, need_input_grad=False):
    """Backward pass of `mlp_forward` for the cotangent d = dL/d(output): writes dW, db
    into `grads` (views of the flat gradient) and returns dL/d(input) if asked for
    (never computed otherwise: the first layer's input is data or noise)."""
    for i in range(len(layers) - 1, -1, -1):
        W, _ = layers[i]
        gW, gb = grads[i]
        np.dot(hs[i].T, d, out=gW)                            # dL/dW = h^T d
        np.sum(d, axis=0, out=gb)                             # dL/db = sum over rows
        if i == 0 and not need_input_grad:
            return None
        dh = ws(f"{name}/d{i}", hs[i].shape)
        np.dot(d, W.T, out=dh)                                # dL/dh = d W^T
        if i > 0:
            elu_grad_(dh, hs[i], ws(f"{name}/tmp{i}", dh.shape))
        d = dh
    return d


def g_backward_shared(ws, layers, grads, hs, d, scale, n_gen):
    """Backward pass of g over rows whose cotangents are scale_r * d_r (adversary),
    while rows 0..n_gen-1 also serve the generator with the unscaled d_r.

    Because backprop is linear in each row's cotangent, one pass carries d; the
    weight gradients apply the row scales (dW = (scale * h)^T d, db = scale^T d), and
    the returned dL/dz of the first n_gen rows is unscaled: J_g(z_r)^T d_r."""
    for i in range(len(layers) - 1, -1, -1):
        W, _ = layers[i]
        gW, gb = grads[i]
        rows = d.shape[0] if i > 0 else n_gen
        dh = ws(f"g/d{i}", (rows, W.shape[0]))
        np.dot(d[:rows], W.T, out=dh)                         # dL/dh (unscaled)
        if i > 0:
            elu_grad_(dh, hs[i], ws(f"g/tmp{i}", dh.shape))   # needs the unscaled h
        hs[i] *= scale[:, None]                               # h is not needed after this
        np.dot(hs[i].T, d, out=gW)                            # sum_r scale_r h_r^T d_r
        np.dot(scale, d, out=gb)                              # sum_r scale_r d_r
        d = dh
    return d                                                  # (n_gen, dz)


# ------------------------------------------------------------------ the step
class FastAVBStep:
    """step(params, states, x, noise, z_neg, scale) -> (params, states, aux), the same
    contract as `train.make_step`'s readable step, for kind 'avb' or 'avb_ac' with the
    inner-product adversary.  Parameters are updated in place (the returned pytree holds
    views into this object's flat buffers); a step whose losses or gradients are not
    finite changes nothing and reports the bad value in `aux`."""

    def __init__(self, kind, arch, cfg):
        why = supports(kind, arch)
        if why:
            raise ValueError(f"the fast step does not support {why}; use step='readable'")
        self.kind, self.arch, self.cfg = kind, arch, cfg
        self.gen_opt = Adam(cfg.lr_gen, cfg.b1, cfg.b2)
        self.adv_opt = Adam(cfg.lr_adv, cfg.b1, cfg.b2)
        self.ws = Workspace()
        self.gen = self.adv = None

    def _bind(self, params):
        gen = {"enc": params["enc"], "dec": params["dec"]}
        if self.gen is None:
            self.gen, self.adv = FlatParams(gen), FlatParams(params["adv"])
            self.ws.xp = array_module(self.gen.flat)                # the parameters' device
        if not self.gen.owns(gen):
            self.gen.load(gen)
        if not self.adv.owns(params["adv"]):
            self.adv.load(params["adv"])

    def params(self):
        return {"enc": self.gen.tree["enc"], "dec": self.gen.tree["dec"], "adv": self.adv.tree}

    def __call__(self, params, states, x, noise, z_neg, scale):
        self._bind(params)
        aux = self.gradients(x, noise, z_neg)
        if all(math.isfinite(v) for v in aux.values()):
            adam_update_(self.gen_opt, self.gen.flat, self.gen.grad, states["gen"],
                         self.cfg.lr_gen * scale, self.gen.scratch)
            adam_update_(self.adv_opt, self.adv.flat, self.adv.grad, states["adv"],
                         self.cfg.lr_adv * scale, self.adv.scratch)
        return self.params(), states, aux

    # -------------------------------------------------------------- gradients
    def gradients(self, x, noise, z_neg):
        """Forward and backward of Algorithm 1 (2): fills self.gen.grad with
        (g_phi, g_theta) of eq. (3.7) (line 12 of Alg. 2) and self.adv.grad with g_psi
        of eq. (3.3); returns the aux floats of `objectives.avb_losses`."""
        ws, arch, kind = self.ws, self.arch, self.kind
        enc, dec = self.gen.tree["enc"], self.gen.tree["dec"]
        genc, gdec = self.gen.grad_tree["enc"], self.gen.grad_tree["dec"]
        f, g = self.adv.tree["f"], self.adv.tree["g"]
        gf, gg = self.adv.grad_tree["f"], self.adv.grad_tree["g"]
        B, Mn, dz = x.shape[0], z_neg.shape[0], arch.z_dim
        all_pairs = self.cfg.negatives == "all_pairs"

        # ---- encoder: z ~ q(z|x)
        if kind == "avb":
            u = ws("enc/in", (B, x.shape[1] + noise.shape[1]))       # [x, eps]  (B, D + E)
            u[:, :x.shape[1]] = x
            u[:, x.shape[1]:] = noise
            enc_hs, z = mlp_forward(ws, "enc", enc, u)              # (B, dz)
            z_adv, inv_sd = z, None
        else:
            enc_hs, out = mlp_forward(ws, "enc", enc["a"], x)      # (B, (m+1) dz)
            z, a, v, vh = _basis_forward(enc["v"], out, noise, arch)
            mean, var = _ac_moments(a, v, out[:, :dz])
            ### BEGIN SOLUTION task 4.1: eq. (4.2), adaptive contrast
            inv_sd = 1.0 / np.sqrt(var + arch.ac_var_floor)           # (B, dz), a constant
            z_adv = (z - mean) * inv_sd                            # z_bar, Alg. 2 line 9
            ### END SOLUTION

        # ---- decoder and log p(x|z), and dL_gen/dlogits = -(d log p / dl) / B
        dec_hs, logits = mlp_forward(ws, "dec", dec, z)           # (B, D)
        loglik, dlogits = bernoulli_loglik_grad(x, logits)         # (B,), (B, D)
        dlogits *= -1.0 / B

        # ---- adversary: F = f(x) once, G = g([z_q; z_p]) once
        f_hs, F = mlp_forward(ws, "f", f, x)                       # (B, H)
        zs = ws("g/in", (B + Mn, dz))
        zs[:B], zs[B:] = z_adv, z_neg
        g_hs, G = mlp_forward(ws, "g", g, zs)                      # (B + M, H)
        if arch.adv_unary:                                         # sec. 5.2: + r(x) + s(z)
            F, G = _pad_unary(ws, F, G)                            # (B, H + 2), (B + M, H + 2)
        G_pos, G_neg = G[:B], G[B:]
        prior_pos = 0.5 * np.sum(z_adv * z_adv, axis=1)                          # (B,)
        T_pos = rowdot(F, G_pos) + prior_pos                                     # (B,)
        prior_neg = 0.5 * np.sum(z_neg * z_neg, axis=1)                          # (M,)
        if all_pairs:
            ### BEGIN SOLUTION task 5.2: the inner-product adversary's NumPy reference
            T_neg = F @ G_neg.T + prior_neg[None, :]                             # (B, M)
            ### END SOLUTION
        else:
            T_neg = rowdot(F, G_neg) + prior_neg                                 # (B,)
        ### BEGIN SOLUTION task 3.1: eq. (3.3), the adversary's loss
        sp_pos, sig_pos = softplus_sigmoid(-T_pos)     # -log sigma(T) and sigma(-T)
        sp_neg, sig_neg = softplus_sigmoid(T_neg)      # -log(1 - sigma(T)) and sigma(T)
        adv_loss = float(np.mean(sp_pos) + np.mean(sp_neg))       # eq. (3.3), negated
        w_pos = sig_pos * (-1.0 / B)                               # dL_adv/dT_pos  (B,)
        w_neg = sig_neg * (1.0 / sig_neg.size)                     # dL_adv/dT_neg  (B,) or (B, M)
        ### END SOLUTION

        # ---- backward of f: dL_adv/dF = w_pos G_pos + (w_neg G_neg | W_neg G_neg)
        dF = ws("f/dout", (B, F.shape[1]))
        ### BEGIN SOLUTION task 5.2: the inner-product adversary's NumPy reference
        np.multiply(G_pos, w_pos[:, None], out=dF)
        if all_pairs:
            dF += w_neg @ G_neg
        else:
            dF += w_neg[:, None] * G_neg
        ### END SOLUTION
        mlp_backward(ws, "f", f, gf, f_hs, dF[:, :-1] if arch.adv_unary else dF)   # [f, r]; 1 is constant

        # ---- backward of g, shared: q-rows carry F (scaled by w_pos for psi), p-rows
        # carry the adversary's cotangent; see `g_backward_shared`.
        dG = ws("g/dout", G.shape)
        dG[:B] = F
        row_scale = ws("g/scale", (B + Mn,))
        row_scale[:B] = w_pos
        if all_pairs:
            ### BEGIN SOLUTION task 5.2: the inner-product adversary's NumPy reference
            np.dot(w_neg.T, F, out=dG[B:])                         # (M, H)
            ### END SOLUTION
            row_scale[B:] = 1.0
        else:
            dG[B:] = F
            row_scale[B:] = w_neg
        if arch.adv_unary:
            dG = _unpad_unary_cotangent(ws, dG)                   # onto [g, s]: (B + M, H + 1)
        JtF = g_backward_shared(ws, g, gg, g_hs, dG, row_scale, B)   # J_g(z_adv)^T F  (B, dz)

        # ---- the generator: L_gen = -(eq. 3.7) or -(Alg. 2 line 12), psi fixed
        T_q = float(np.mean(T_pos))
        if kind == "avb":
            ### BEGIN SOLUTION task 3.2: eq. (3.7), the generator objective
            gen = float(np.mean(loglik)) - T_q                     # eq. (3.7)
            dz_T = (JtF + z_adv) * (1.0 / B)                       # dL_gen/dz through T
            ### END SOLUTION
        else:
            ### BEGIN SOLUTION task 4.1: eq. (4.2), adaptive contrast
            # -T(x, z_bar) + ||z_bar||^2/2 = -<f, g(z_bar)>: the folded prior term cancels
            log_prior = -0.5 * np.sum(z * z, axis=1) - 0.5 * dz * np.log(2 * np.pi)
            gen = float(np.mean(-T_pos + prior_pos + loglik + log_prior))
            dz_T = JtF * inv_sd + z                                # d/dz of -(...) via z_bar and log p(z)
            dz_T *= 1.0 / B
            ### END SOLUTION
        dz = mlp_backward(ws, "dec", dec, gdec, dec_hs, dlogits, need_input_grad=True)
        dz += dz_T                                                 # (B, dz)
        if kind == "avb":
            mlp_backward(ws, "enc", enc, genc, enc_hs, dz)
        else:
            dout = _basis_backward(enc["v"], genc["v"], dz, a, v, vh, noise, arch)
            mlp_backward(ws, "enc", enc["a"], genc["a"], enc_hs, dout)

        aux = {"gen_objective": gen, "adv_loss": adv_loss, "loglik": float(np.mean(loglik)), "T_q": T_q}
        if not (math.isfinite(float(np.sum(self.gen.grad))) and math.isfinite(float(np.sum(self.adv.grad)))):
            aux["gradients"] = float("nan")
        return aux


# ------------------------------------------------------------------ sec. 5.2's unary terms
def _pad_unary(ws, F, G):
    """[f, r] -> [f, r, 1] and [g, s] -> [g, 1, s] (`models.adversary_features_x/_z`), so
    that one inner product gives <f, g> + r(x) + s(z).  (B, H+1), (M, H+1) -> (B, H+2), (M, H+2)."""
    H = F.shape[1] - 1
    Fp, Gp = ws("f/pad", (F.shape[0], H + 2)), ws("g/pad", (G.shape[0], H + 2))
    Fp[:, :H + 1] = F
    Fp[:, H + 1] = 1.0
    Gp[:, :H] = G[:, :H]
    Gp[:, H] = 1.0
    Gp[:, H + 1] = G[:, H]
    return Fp, Gp


def _unpad_unary_cotangent(ws, dGp):
    """The cotangent on [g, 1, s] -> the cotangent on g's output [g, s]  (M, H+2) -> (M, H+1)."""
    H = dGp.shape[1] - 2
    dG = ws("g/dout_net", (dGp.shape[0], H + 1))
    dG[:, :H] = dGp[:, :H]
    dG[:, H] = dGp[:, H + 1]
    return dG


# ------------------------------------------------------------------ AC encoder pieces
def _basis_forward(v_params, out, eps, arch):
    """Supplement III as in `models.noise_basis_encoder`: z = z0 + sum_i a_i v_i(eps_i)."""
    (W1, b1), (W2, b2) = v_params
    m, dz = arch.n_basis, arch.z_dim
    a = out[:, dz:].reshape(-1, m, dz)                                   # (B, m, dz)
    vh = np.einsum("bme,meh->bmh", eps, W1) + b1[:, 0][None]             # (B, m, hb)
    elu_(vh, np.empty_like(vh))
    v = np.einsum("bmh,mhz->bmz", vh, W2) + b2[:, 0][None]              # (B, m, dz)
    z = out[:, :dz] + np.sum(a * v, axis=1)                              # eq. (III.1)
    return z, a, v, vh


def _ac_moments(a, v, z0):
    """eq. (III.2)-(III.3) with the batch moments of v (constants for the gradient)."""
    return M.ac_moments(z0, a, np.mean(v, axis=0), np.var(v, axis=0))  # batch moments (m, dz)


def _basis_backward(v_params, v_grads, dz, a, v, vh, eps, arch):
    """Backward of `_basis_forward`: writes the basis nets' gradients, returns
    dL/d(out) of the a-net, out = [z0, a_1, ..., a_m]  (B, (m+1) dz)."""
    (_, _), (W2, _) = v_params
    (gW1, gb1), (gW2, gb2) = v_grads
    B, dz_dim = dz.shape
    da = dz[:, None, :] * v                                              # (B, m, dz)
    dv = dz[:, None, :] * a                                              # (B, m, dz)
    _einsum_into("bmh,bmz->mhz", vh, dv, gW2)
    gb2[:] = dv.sum(axis=0)[:, None, :]
    dh = np.einsum("bmz,mhz->bmh", dv, W2)                               # (B, m, hb)
    elu_grad_(dh, vh, np.empty_like(dh))
    _einsum_into("bme,bmh->meh", eps, dh, gW1)
    gb1[:] = dh.sum(axis=0)[:, None, :]
    return np.concatenate([dz, da.reshape(B, -1)], axis=1)
