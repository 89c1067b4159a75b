// philox.cu: standard normal noise from a counter-based generator, Philox 4x32-10 (Salmon,
// Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011), through
// the Box-Muller transform.  Output element i depends on (seed, offset, i) alone: no state
// is carried between threads or launches, so any launch shape gives the same numbers, and a
// captured CUDA graph draws fresh noise at each replay when `offset` (read from device
// memory) is advanced between replays.
//
// Entry point (suffix _f32 / _f64):
//   philox_normal(out, state, n)   out: (n,) standard normal draws
//     state: 4 x uint32 in device memory = [seed_lo, seed_hi, offset_lo, offset_hi]
//     group q = i / 4 of outputs 4q..4q+3 is one Philox call on counter
//     (q_lo, q_hi, offset_lo, offset_hi) with key (seed_lo, seed_hi) -> x0, x1, x2, x3;
//     u = (x0 + 1) 2^-32 in (0, 1], w = x1 2^-32 in [0, 1):
//       out[4q] = sqrt(-2 log u) cos(2 pi w),  out[4q + 1] = sqrt(-2 log u) sin(2 pi w),
//     and the same from (x2, x3) for out[4q + 2], out[4q + 3].
// Launch shape: 1-d blocks, any grid: the threads walk the groups with a grid-stride loop.

__device__ inline float log_(float t) { return logf(t); }
__device__ inline double log_(double t) { return log(t); }
__device__ inline float sqrt_(float t) { return sqrtf(t); }
__device__ inline double sqrt_(double t) { return sqrt(t); }
// cos(pi t), sin(pi t): exact argument reduction, so float stays float (cosf would carry a
// double-precision path for large angles that these never reach)
__device__ inline float cospi_(float t) { return cospif(t); }
__device__ inline double cospi_(double t) { return cospi(t); }
__device__ inline float sinpi_(float t) { return sinpif(t); }
__device__ inline double sinpi_(double t) { return sinpi(t); }

// hi and lo 32 bits of the 64-bit product a b
__device__ inline void mulhilo(unsigned int a, unsigned int b, unsigned int& hi, unsigned int& lo) {
    const unsigned long long p = (unsigned long long)a * b;
    hi = (unsigned int)(p >> 32);
    lo = (unsigned int)p;
}

// Ten rounds of Philox 4x32 on the counter c (in place) with key (k0, k1).
__device__ inline void philox4x32_10(unsigned int c[4], unsigned int k0, unsigned int k1) {
    for (int round = 0; round < 10; ++round) {
        unsigned int hi0, lo0, hi1, lo1;
        mulhilo(0xD2511F53u, c[0], hi0, lo0);
        mulhilo(0xCD9E8D57u, c[2], hi1, lo1);
        const unsigned int c0 = hi1 ^ c[1] ^ k0, c2 = hi0 ^ c[3] ^ k1;
        c[0] = c0, c[1] = lo1, c[2] = c2, c[3] = lo0;
        k0 += 0x9E3779B9u;                         // the key schedule (Weyl sequence)
        k1 += 0xBB67AE85u;
    }
}

// Two standard normals from two 32-bit words (Box-Muller).
template <typename T>
__device__ void box_muller(unsigned int a, unsigned int b, T& z0, T& z1) {
    const T two_m32 = T(2.3283064365386963e-10);    // 2^-32
    const T u = (T(a) + T(1)) * two_m32, w = T(b) * two_m32;
    const T r = sqrt_(T(-2) * log_(u));
    z0 = r * cospi_(T(2) * w);                          // r cos(2 pi w)
    z1 = r * sinpi_(T(2) * w);
}

template <typename T>
__device__ void philox_normal(T* out, const unsigned int* state, int n) {
    const long long groups = ((long long)n + 3) / 4;
    for (long long q = (long long)blockIdx.x * blockDim.x + threadIdx.x; q < groups;
         q += (long long)gridDim.x * blockDim.x) {
        unsigned int c[4] = {(unsigned int)q, (unsigned int)(q >> 32), state[2], state[3]};
        philox4x32_10(c, state[0], state[1]);
        T z[4];
        box_muller(c[0], c[1], z[0], z[1]);
        box_muller(c[2], c[3], z[2], z[3]);
        for (int e = 0; e < 4; ++e)
            if (4 * q + e < n) out[4 * q + e] = z[e];
    }
}

// The raw generator, for the known-answer test: out[4q..4q+3] = Philox(counter
// (q_lo, q_hi, offset_lo, offset_hi), key (seed_lo, seed_hi)), `groups` groups.
extern "C" __global__ void philox_bits(unsigned int* out, const unsigned int* state, int groups) {
    for (int q = blockIdx.x * blockDim.x + threadIdx.x; q < groups; q += gridDim.x * blockDim.x) {
        unsigned int c[4] = {(unsigned int)q, 0u, state[2], state[3]};
        philox4x32_10(c, state[0], state[1]);
        for (int e = 0; e < 4; ++e) out[4 * q + e] = c[e];
    }
}

#define PHILOX_ENTRY_POINTS(T, SFX)                                                           \
    extern "C" __global__ void philox_normal_##SFX(T* out, const unsigned int* state, int n) { \
        philox_normal<T>(out, state, n);                                                      \
    }

PHILOX_ENTRY_POINTS(float, f32)
PHILOX_ENTRY_POINTS(double, f64)
