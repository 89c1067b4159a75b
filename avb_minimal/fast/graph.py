"""The fast step (Algorithm 1 / 2) captured once as a CUDA graph and replayed per iteration.

At the paper's sizes a step on the GPU is all launch overhead: a few hundred small kernels,
each costing more to launch than to run.  A CUDA graph records the launches once and
replays them with one call.  Two facts shape this module:

1. cupy refuses cuBLAS and cuRAND while a stream is being captured, so every matrix product
   runs on the project's own tiled GEMM (`device_ops.gemm`, with the bias add and ELU fused
   into the forward products and ELU' into the backward ones), and Adam on its fused kernel
   (`device_ops.adam_`).  The step's inputs (data, noise, prior samples) are copied into
   static buffers before each replay.
2. Nothing inside a capture may wait for the device: no float() of a device value and no
   Python branch on one.  So the losses, the finiteness check and the decision to skip a
   bad step stay on the device: `aux` is one device vector [gen, adv_loss, loglik, T_q, ok],
   read once after the replay, and the Adam kernel skips its update where ok == 0.

`GraphAVBStep` has the contract of `fast.step.FastAVBStep` (which it extends: the same flat
buffers and parameter pytrees) and computes the same numbers (tests/test_graph.py).  Where
capture is unavailable (NumPy arrays, the strict stand-in, a capture that fails) it runs the
same launches one by one and says so once on stderr.
"""
import contextlib
import math
import sys

import numpy as np

from .. import models as M
from ..backend import array_module, to_numpy
from ..ops import bernoulli_loglik_grad, inner_product_rows, softplus_sigmoid
from .device_ops import adam_, adam_hyper, gemm
from .step import FastAVBStep

AUX = ("gen_objective", "adv_loss", "loglik", "T_q")      # then ok: 1.0, or 0.0 for a skipped step


# ------------------------------------------------------------------ MLP on the GEMM kernel
def mlp_forward(ws, name, layers, h):
    """h -> elu(h W1 + b1) -> ... -> h WL + bL, one fused launch per layer.
    Returns (inputs of each layer [h, h1, ..., h_{L-1}], output)."""
    hs = [h]
    ### BEGIN SOLUTION task 0.1: the MLP forward pass
    for i, (W, b) in enumerate(layers):
        out = ws(f"{name}/a{i}", (h.shape[0], W.shape[1]))                     # (rows, n_out)
        gemm(h, W, out, epilogue="bias_elu" if i < len(layers) - 1 else "bias", bias=b)
        if i < len(layers) - 1:
            hs.append(out)
        h = out
    ### END SOLUTION
    return hs, h


def mlp_backward(ws, name, layers, grads, hs, d, need_input_grad=False):
    """Backward of `mlp_forward` for d = dL/d(output): dW, db into `grads`; dL/d(input) if asked."""
    for i in range(len(layers) - 1, -1, -1):
        W, _ = layers[i]
        gW, gb = grads[i]
        gemm(hs[i], d, gW, ta=True)                                          # dL/dW = h^T d
        d.sum(axis=0, out=gb)                                                # dL/db
        if i == 0 and not need_input_grad:
            return None
        dh = ws(f"{name}/d{i}", hs[i].shape)
        if i > 0:
            gemm(d, W, dh, tb=True, epilogue="elu_grad", E=hs[i])            # (d W^T) * elu'
        else:
            gemm(d, W, dh, tb=True)                                          # d W^T
        d = dh
    return d


def g_backward_shared(ws, layers, grads, hs, d, scale, n_gen):
    """`fast.step.g_backward_shared` on the GEMM kernel: one backward pass of g serving the
    adversary (rows scaled by `scale` in dW, db) and the generator (unscaled dz of the first
    n_gen rows)."""
    for i in range(len(layers) - 1, -1, -1):
        W, _ = layers[i]
        gW, gb = grads[i]
        rows = d.shape[0] if i > 0 else n_gen
        dh = ws(f"g/d{i}", (rows, W.shape[0]))
        if i > 0:
            gemm(d[:rows], W, dh, tb=True, epilogue="elu_grad", E=hs[i][:rows])
        else:
            gemm(d[:rows], W, dh, tb=True)
        hs[i] *= scale[:, None]                                              # h is not needed after this
        gemm(hs[i], d, gW, ta=True)                                          # sum_r scale_r h_r^T d_r
        gemm(scale[None, :], d, gb[None, :])                                 # sum_r scale_r d_r
        d = dh
    return d                                                                 # (n_gen, dz)


# ------------------------------------------------------------------ the step
class GraphAVBStep(FastAVBStep):
    """step(params, states, x, noise, z_neg, scale) -> (params, states, aux), as FastAVBStep;
    on a GPU the first call runs the step and captures it, later calls replay the graph.
    capture=False runs plain launches everywhere (for comparisons)."""

    def __init__(self, kind, arch, cfg, capture=True):
        if arch.adv_unary:
            raise ValueError("the captured step does not implement sec. 5.2's r(x) + s(z) (adv_unary); "
                             "use the fast step")
        super().__init__(kind, arch, cfg)
        self.capture, self.graph, self.mode = capture, None, None     # mode: 'graph' | 'plain'
        self.buf = None

    def __call__(self, params, states, x, noise, z_neg, scale):
        self._bind(params)
        xp = self.ws.xp
        if self.buf is None:
            self.buf = {"x": xp.empty(x.shape, x.dtype), "noise": xp.empty(noise.shape, noise.dtype),
                        "z_neg": xp.empty(z_neg.shape, z_neg.dtype), "hyper": xp.empty((2, 6), np.float32),
                        "aux": xp.zeros(len(AUX) + 1, np.float32),
                        "moments": {k: {m: xp.zeros_like(self.gen.flat if k == "gen" else self.adv.flat)
                                        for m in ("m", "v")} for k in ("gen", "adv")}}
        self._stage(states, x, noise, z_neg, scale)
        if self.mode is None:
            self._body()                        # the first step: compiles, allocates the workspace
            why = self._capture() if self.capture else "capture=False"
            self.mode = "plain" if why else "graph"
            if why:
                print(f"avb_minimal: the training step runs as plain kernel launches, not a CUDA graph ({why})",
                      file=sys.stderr)
        elif self.graph is not None:
            event = xp.cuda.Event()
            event.record()                      # the inputs were staged on the caller's stream
            self.stream.wait_event(event)
            self.graph.launch(stream=self.stream)
            self.stream.synchronize()
        else:
            self._body()
        vals = [float(v) for v in to_numpy(self.buf["aux"])]     # the one copy to the host per step
        aux = dict(zip(AUX, vals))
        if vals[-1]:
            for k in ("gen", "adv"):
                states[k]["t"] += 1
        elif all(math.isfinite(v) for v in vals[:-1]):
            aux["gradients"] = float("nan")
        return self.params(), states, aux

    def _stage(self, states, x, noise, z_neg, scale):
        """Copy this step's inputs, Adam's step sizes and (where the caller's states are new
        arrays) the moments into the buffers the graph reads."""
        b, xp = self.buf, self.ws.xp
        b["x"][...], b["noise"][...], b["z_neg"][...] = x, noise, z_neg
        hyper = [adam_hyper(opt, lr * scale, states[k]["t"] + 1)
                 for k, opt, lr in (("gen", self.gen_opt, self.cfg.lr_gen), ("adv", self.adv_opt, self.cfg.lr_adv))]
        b["hyper"][...] = xp.asarray(np.stack(hyper))
        for k in ("gen", "adv"):
            for m in ("m", "v"):
                if states[k][m] is not b["moments"][k][m]:
                    b["moments"][k][m][...] = states[k][m]
                    states[k][m] = b["moments"][k][m]

    def _capture(self):
        """Record `_body` on a stream of its own into a CUDA graph; '' or why not."""
        xp = self.ws.xp
        cuda = getattr(xp, "cuda", None)
        if xp is np or not all(hasattr(cuda, n) for n in ("Stream", "MemoryPool", "using_allocator", "Event")):
            return "NumPy arrays" if xp is np else f"{xp.__name__} has no CUDA streams to capture"
        try:
            cuda.get_current_stream().synchronize()          # the first step is done
            self.stream, self.pool = cuda.Stream(non_blocking=True), cuda.MemoryPool()
            # the graph's temporaries live in a pool of their own: nothing else reuses them
            with self.stream, cuda.using_allocator(self.pool.malloc):
                self.stream.begin_capture()
                try:
                    self._body()
                except Exception:
                    with contextlib.suppress(Exception):
                        self.stream.end_capture()
                    raise
                self.graph = self.stream.end_capture()
        except Exception as e:  # noqa: BLE001  (any capture failure: the plain launches still work)
            self.graph = None
            return f"capture failed: {type(e).__name__}: {e}"
        return ""

    def _body(self):
        """Forward, backward and both Adam updates on the static buffers: launches only."""
        b, xp = self.buf, self.ws.xp
        self.graph_gradients(b["x"], b["noise"], b["z_neg"])
        aux = b["aux"]
        aux[len(AUX)] = (xp.isfinite(aux[:len(AUX)]).all() & xp.isfinite(self.gen.grad.sum())
                         & xp.isfinite(self.adv.grad.sum()))
        ok = aux[len(AUX):]
        for i, (k, p) in enumerate((("gen", self.gen), ("adv", self.adv))):
            mom = b["moments"][k]
            adam_(p.flat, p.grad, mom["m"], mom["v"], b["hyper"][i], ok)

    # -------------------------------------------------------------- gradients
    def graph_gradients(self, x, noise, z_neg):
        """`FastAVBStep.gradients` with device scalars: fills the two flat gradients and writes
        [gen, adv_loss, loglik, T_q] into buf['aux']; nothing is copied to the host."""
        ws, arch, kind, xp = self.ws, self.arch, self.kind, array_module(x)
        enc, dec = self.gen.tree["enc"], self.gen.tree["dec"]
        genc, gdec = self.gen.grad_tree["enc"], self.gen.grad_tree["dec"]
        f, g = self.adv.tree["f"], self.adv.tree["g"]
        gf, gg = self.adv.grad_tree["f"], self.adv.grad_tree["g"]
        B, Mn, dz = x.shape[0], z_neg.shape[0], arch.z_dim
        all_pairs = self.cfg.negatives == "all_pairs"

        # ---- encoder: z ~ q(z|x)
        if kind == "avb":
            u = ws("enc/in", (B, x.shape[1] + noise.shape[1]))               # [x, eps]  (B, D + E)
            u[:, :x.shape[1]] = x
            u[:, x.shape[1]:] = noise
            enc_hs, z = mlp_forward(ws, "enc", enc, u)                      # (B, dz)
            z_adv, inv_sd = z, None
        else:
            enc_hs, out = mlp_forward(ws, "enc", enc["a"], x)              # (B, (m+1) dz)
            z, a, v, vh = _basis_forward(ws, enc["v"], out, noise, arch)
            mean, var = M.ac_moments(out[:, :dz], a, xp.mean(v, axis=0), xp.var(v, axis=0))
            ### BEGIN SOLUTION task 4.1: eq. (4.2), adaptive contrast
            inv_sd = 1.0 / xp.sqrt(var + arch.ac_var_floor)                   # eq. (4.2), a constant
            z_adv = (z - mean) * inv_sd
            ### END SOLUTION

        # ---- decoder and log p(x|z)
        dec_hs, logits = mlp_forward(ws, "dec", dec, z)                   # (B, D)
        loglik, dlogits = bernoulli_loglik_grad(x, logits)                 # (B,), (B, D)
        dlogits *= -1.0 / B

        # ---- adversary: F = f(x), G = g([z_q; z_p])
        f_hs, F = mlp_forward(ws, "f", f, x)                               # (B, H)
        zs = ws("g/in", (B + Mn, dz))
        zs[:B], zs[B:] = z_adv, z_neg
        g_hs, G = mlp_forward(ws, "g", g, zs)                              # (B + M, H)
        G_pos, G_neg = G[:B], G[B:]
        prior_pos = 0.5 * xp.sum(z_adv * z_adv, axis=1)                    # (B,)
        T_pos = inner_product_rows(F, G_pos) + prior_pos                   # (B,)
        prior_neg = 0.5 * xp.sum(z_neg * z_neg, axis=1)                    # (M,)
        if all_pairs:
            T_neg = gemm(F, G_neg, ws("T_neg", (B, Mn)), tb=True) + prior_neg[None, :]   # (B, M)
        else:
            T_neg = inner_product_rows(F, G_neg) + prior_neg               # (B,)
        ### BEGIN SOLUTION task 3.1: eq. (3.3), the adversary's loss
        sp_pos, sig_pos = softplus_sigmoid(-T_pos)                         # eq. (3.3)
        sp_neg, sig_neg = softplus_sigmoid(T_neg)
        adv_loss = xp.mean(sp_pos) + xp.mean(sp_neg)
        w_pos = sig_pos * (-1.0 / B)                                       # dL_adv/dT_pos  (B,)
        w_neg = sig_neg * (1.0 / sig_neg.size)                             # dL_adv/dT_neg
        ### END SOLUTION

        # ---- backward of f and (shared) of g
        dF = ws("f/dout", (B, F.shape[1]))
        xp.multiply(G_pos, w_pos[:, None], out=dF)
        if all_pairs:
            gemm(w_neg, G_neg, dF, epilogue="accumulate")                  # += W_neg G_neg
        else:
            dF += w_neg[:, None] * G_neg
        mlp_backward(ws, "f", f, gf, f_hs, dF)
        dG = ws("g/dout", G.shape)
        dG[:B] = F
        row_scale = ws("g/scale", (B + Mn,))
        row_scale[:B] = w_pos
        if all_pairs:
            gemm(w_neg, F, dG[B:], ta=True)                                # (M, H)
            row_scale[B:] = 1.0
        else:
            dG[B:] = F
            row_scale[B:] = w_neg
        JtF = g_backward_shared(ws, g, gg, g_hs, dG, row_scale, B)         # (B, dz)

        # ---- the generator, psi fixed
        T_q = xp.mean(T_pos)
        if kind == "avb":
            gen = xp.mean(loglik) - T_q                                    # eq. (3.7)
            dz_T = (JtF + z_adv) * (1.0 / B)
        else:
            ### BEGIN SOLUTION task 4.1: eq. (4.2), adaptive contrast
            log_prior = -0.5 * xp.sum(z * z, axis=1) - 0.5 * dz * np.log(2 * np.pi)
            gen = xp.mean(-T_pos + prior_pos + loglik + log_prior)         # Alg. 2, line 12
            dz_T = (JtF * inv_sd + z) * (1.0 / B)
            ### END SOLUTION
        dzv = mlp_backward(ws, "dec", dec, gdec, dec_hs, dlogits, need_input_grad=True)
        dzv += dz_T                                                        # (B, dz)
        if kind == "avb":
            mlp_backward(ws, "enc", enc, genc, enc_hs, dzv)
        else:
            dout = _basis_backward(ws, enc["v"], genc["v"], dzv, a, v, vh, noise, arch)
            mlp_backward(ws, "enc", enc["a"], genc["a"], enc_hs, dout)
        for i, val in enumerate((gen, adv_loss, xp.mean(loglik), T_q)):
            self.buf["aux"][i] = val


# ------------------------------------------------------------------ AC encoder on the GEMM kernel
def _basis_forward(ws, v_params, out, eps, arch):
    """Supplement III: z = z0 + sum_i a_i v_i(eps_i), the m basis nets as batched products."""
    (W1, b1), (W2, b2) = v_params
    m, dz, B = arch.n_basis, arch.z_dim, out.shape[0]
    a = out[:, dz:].reshape(-1, m, dz)                                    # (B, m, dz)
    vh = ws("basis/vh", (B, m, W1.shape[2]))                               # (B, m, hb)
    gemm(eps.transpose(1, 0, 2), W1, vh.transpose(1, 0, 2), epilogue="bias_elu", bias=b1[:, 0])
    v = ws("basis/v", (B, m, dz))                                          # (B, m, dz)
    gemm(vh.transpose(1, 0, 2), W2, v.transpose(1, 0, 2), epilogue="bias", bias=b2[:, 0])
    z = out[:, :dz] + (a * v).sum(axis=1)                                  # eq. (III.1)
    return z, a, v, vh


def _basis_backward(ws, v_params, v_grads, dz, a, v, vh, eps, arch):
    """Backward of `_basis_forward`: the basis nets' gradients; returns dL/d(out) (B, (m+1) dz)."""
    (_, _), (W2, _) = v_params
    (gW1, gb1), (gW2, gb2) = v_grads
    B, d = dz.shape
    dv = dz[:, None, :] * a                                                # (B, m, dz)
    gemm(vh.transpose(1, 0, 2), dv.transpose(1, 0, 2), gW2, ta=True)       # (m, hb, dz)
    gb2[...] = dv.sum(axis=0)[:, None, :]
    dh = ws("basis/dh", vh.shape)                                          # (B, m, hb)
    gemm(dv.transpose(1, 0, 2), W2, dh.transpose(1, 0, 2), tb=True, epilogue="elu_grad",
         E=vh.transpose(1, 0, 2))
    gemm(eps.transpose(1, 0, 2), dh.transpose(1, 0, 2), gW1, ta=True)     # (m, e, hb)
    gb1[...] = dh.sum(axis=0)[:, None, :]
    dout = ws("basis/dout", (B, d * (1 + arch.n_basis)))
    dout[:, :d] = dz
    dout[:, d:] = (dz[:, None, :] * v).reshape(B, -1)                      # da
    return dout
