// adam.cu: one Adam step (Kingma & Ba, 2015) over a player's flat parameter buffer, fused:
// one pass reads p, g, m, v and writes p, m, v (optim.adam_update_ does the same arithmetic
// in twelve vector operations).
//
// Entry point (suffix _f32 / _f64):
//   adam(p, g, m, v, hyper, ok, n)    p, g, m, v: (n,), updated in place (g is read only)
//     hyper: 6 values in device memory, [step, b1, 1 - b1, b2, 1 - b2, eps], where
//       step = lr sqrt(1 - b2^t) / (1 - b1^t) (both bias corrections folded in);
//       a captured graph reads them at each replay, so schedules need no new capture;
//     ok: null, or 1 value in device memory: the update is skipped where ok[0] == 0 (a step
//       whose losses or gradients are not finite changes nothing).
//   m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2;   p <- p - step m / (sqrt(v) + eps)
// Launch shape: 1-d blocks, any grid (grid-stride loop).

__device__ inline float sqrt_(float t) { return sqrtf(t); }
__device__ inline double sqrt_(double t) { return sqrt(t); }

template <typename T>
__device__ void adam(T* p, const T* g, T* m, T* v, const T* hyper, const T* ok, int n) {
    if (ok && ok[0] == T(0)) return;
    const T step = hyper[0], b1 = hyper[1], c1 = hyper[2], b2 = hyper[3], c2 = hyper[4];
    const T eps = hyper[5];
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const T gi = g[i];
        const T mi = m[i] * b1 + gi * c1;
        const T vi = v[i] * b2 + (gi * gi) * c2;
        m[i] = mi;
        v[i] = vi;
        p[i] += (mi / (sqrt_(vi) + eps)) * -step;
    }
}

#define ADAM_ENTRY_POINTS(T, SFX)                                                             \
    extern "C" __global__ void adam_##SFX(T* p, const T* g, T* m, T* v, const T* hyper,        \
                                          const T* ok, int n) {                               \
        adam<T>(p, g, m, v, hyper, ok, n);                                                    \
    }

ADAM_ENTRY_POINTS(float, f32)
ADAM_ENTRY_POINTS(double, f64)
