// inner_product.cu: the batched inner-product adversary of AVB (paper sec. 5.2),
// T(x, z) = <f(x), g(z)>, with F = f(x) and G = g(z) computed by the two MLPs.
//
// What each entry point computes (suffix _f32 for float, _f64 for double):
//   ip_rows           T_i = <F_i, G_i>                       F, G: (B, H) -> T: (B,)
//   ip_rows_vjp       dF_i = g_i G_i,  dG_i = g_i F_i        g: (B,) -> dF, dG: (B, H)
//                     (either output pointer may be null: it is then skipped)
//   ip_rows_logistic  the fused eq. (3.3) step: T_i = <F_i, G_i> + c_i (c may be null),
//                     loss_i = softplus(T_i) - y T_i   (y = 1: -log sigma(T), pairs (x, z ~ q(z|x));
//                                                       y = 0: -log(1 - sigma(T)), pairs (x, z ~ p(z)))
//                     dT_i = d loss_i / d T_i = sigma(T_i) - y                      -> loss, dT: (B,)
//   ip_pairs          T_ij = <F_i, G_j> = (F G^T)_ij          F: (B, H), G: (M, H) -> T: (B, M)
//   ip_pairs_vjp_F    dF = g G                                 g: (B, M) -> dF: (B, H)
//   ip_pairs_vjp_G    dG = g^T F                               g: (B, M) -> dG: (M, H)
//
// Memory layout: every array is C-contiguous (row-major) in global memory; sizes are
// 32-bit ints, element offsets are computed in 64 bits.
//
// Launch shapes:
//   row kernels (ip_rows*): block (bx, by) = bx threads per row, by rows per block,
//     bx a power of two, bx * by <= 1024 (the GPU default is (32, 8)); grid (gx): the
//     blocks walk over groups of by rows with a grid-stride loop, so any gx >= 1 is
//     correct.  The bx threads of a row stride over H (thread tx reads h = tx, tx + bx, ...,
//     so neighbouring threads read neighbouring addresses) and their partial sums are
//     tree-reduced in shared memory (no warp intrinsics).
//   all-pairs kernels (ip_pairs*): block (t, t) with t <= 16 (the GPU default is 16 x 16);
//     each block owns an S x S tile of the output, S = 4t, and each thread 4 x 4 of its
//     elements (register blocking); grid (gx, gy): output column tiles along x, row
//     tiles along y, grid-stride again, so any grid is correct.  Each step stages an
//     S x 16 slice of one operand and a 16 x S slice of the other in shared memory, so
//     each global element is read (size / S) times instead of (size) times.
// Every thread of a block reaches every __syncthreads() (loop bounds depend only on
// blockIdx and sizes), which is what CUDA requires and what the CPU emulation relies on.

#define TILE_R 4       // all-pairs: outputs per thread along each axis (R)
#define TILE_BK 16     // all-pairs: depth of one shared-memory step (BK)
#define TILE_S_MAX 64  // all-pairs: largest output tile S = R * blockDim.x, so blockDim.x <= 16

#include "device_math.cuh"   // relu, softplus, sigmoid, row_sum

// <F_row, G_row> for row = row0 + threadIdx.y (0 for rows past B), at tx == 0.
template <typename T>
__device__ T row_dot(const T* F, const T* G, int row0, int B, int H) {
    T acc = 0;
    // ### BEGIN SOLUTION task 5.3: the row-wise inner-product CUDA kernel
    const int row = row0 + threadIdx.y;
    if (row < B) {
        const T* f = F + (long long)row * H;
        const T* g = G + (long long)row * H;
        for (int h = threadIdx.x; h < H; h += blockDim.x) acc += f[h] * g[h];
    }
    // ### END SOLUTION
    return row_sum(acc);
}

template <typename T>
__device__ void ip_rows(const T* F, const T* G, T* out, int B, int H) {
    for (int row0 = blockIdx.x * blockDim.y; row0 < B; row0 += gridDim.x * blockDim.y) {
        const T t = row_dot(F, G, row0, B, H);
        const int row = row0 + threadIdx.y;
        if (threadIdx.x == 0 && row < B) out[row] = t;
    }
}

template <typename T>
__device__ void ip_rows_logistic(const T* F, const T* G, const T* c, int y, T* loss, T* dT,
                                 int B, int H) {
    for (int row0 = blockIdx.x * blockDim.y; row0 < B; row0 += gridDim.x * blockDim.y) {
        const T dot = row_dot(F, G, row0, B, H);
        const int row = row0 + threadIdx.y;
        if (threadIdx.x == 0 && row < B) {
            const T t = dot + (c ? c[row] : T(0));
            // softplus(t) - y t written without cancellation: softplus(-t) when y = 1.
            loss[row] = y ? softplus(-t) : softplus(t);
            dT[row] = y ? -sigmoid(-t) : sigmoid(t);       // sigma(t) - y, eq. (3.3)'s gradient
        }
    }
}

template <typename T>
__device__ void ip_rows_vjp(const T* F, const T* G, const T* g, T* dF, T* dG, int B, int H) {
    for (int row0 = blockIdx.x * blockDim.y; row0 < B; row0 += gridDim.x * blockDim.y) {
        const int row = row0 + threadIdx.y;
        if (row < B) {
            // ### BEGIN SOLUTION task 5.2: the inner-product adversary's NumPy reference
            const T gi = g[row];
            const long long o = (long long)row * H;
            for (int h = threadIdx.x; h < H; h += blockDim.x) {
                if (dF) dF[o + h] = gi * G[o + h];
                if (dG) dG[o + h] = gi * F[o + h];
            }
            // ### END SOLUTION
        }
    }
}

// C = A B with A(i, l) = A_T ? A[l m + i] : A[i k + l]   (A stored (k, m) or (m, k))
//           and B(l, j) = B_T ? B[j k + l] : B[l n + j]   (B stored (n, k) or (k, n)),
// C: (m, n).  The transposed flags let one tiled loop serve the logits and both VJPs.
// A block of t x t threads owns an S x S tile of C, S = R t; thread (tx, ty) owns the
// R x R outputs (i0 + ty + a t, j0 + tx + b t), a, b < R, kept in registers.  Each step
// stages an S x BK slice of A and a BK x S slice of B in shared memory (all threads
// load, neighbouring threads neighbouring addresses), then every thread does R*R*BK
// multiply-adds from shared memory: each global element is read n / S times, not n.
template <typename T, bool A_T, bool B_T>
__device__ void tiled_product(const T* A, const T* Bm, T* C, int m, int n, int k) {
    __shared__ T As[TILE_S_MAX][TILE_BK + 1];     // As[r][c] = A(i0 + r, l0 + c)
    __shared__ T Bs[TILE_BK][TILE_S_MAX + 1];     // Bs[r][c] = B(l0 + r, j0 + c)
    const int t = blockDim.x, tx = threadIdx.x, ty = threadIdx.y;
    const int S = TILE_R * t, tid = ty * t + tx, n_threads = t * t;
    if (blockDim.y != blockDim.x || S > TILE_S_MAX) return;  // uniform over the block
    for (int i0 = blockIdx.y * S; i0 < m; i0 += gridDim.y * S) {
        for (int j0 = blockIdx.x * S; j0 < n; j0 += gridDim.x * S) {
            T acc[TILE_R][TILE_R];
            for (int a = 0; a < TILE_R; ++a)
                for (int b = 0; b < TILE_R; ++b) acc[a][b] = T(0);
            for (int l0 = 0; l0 < k; l0 += TILE_BK) {
                for (int e = tid; e < S * TILE_BK; e += n_threads) {
                    // consecutive e walk along the stored rows of A and B (coalesced)
                    const int r = A_T ? e % S : e / TILE_BK, c = A_T ? e / S : e % TILE_BK;
                    const int i = i0 + r, l = l0 + c;
                    As[r][c] = (i < m && l < k)
                                   ? A[A_T ? (long long)l * m + i : (long long)i * k + l] : T(0);
                }
                for (int e = tid; e < TILE_BK * S; e += n_threads) {
                    const int r = B_T ? e % TILE_BK : e / S, c = B_T ? e / TILE_BK : e % S;
                    const int l = l0 + r, j = j0 + c;
                    Bs[r][c] = (l < k && j < n)
                                   ? Bm[B_T ? (long long)j * k + l : (long long)l * n + j] : T(0);
                }
                __syncthreads();
                for (int c = 0; c < TILE_BK; ++c) {
                    T a_reg[TILE_R], b_reg[TILE_R];
                    for (int a = 0; a < TILE_R; ++a) a_reg[a] = As[ty + a * t][c];
                    for (int b = 0; b < TILE_R; ++b) b_reg[b] = Bs[c][tx + b * t];
                    for (int a = 0; a < TILE_R; ++a)
                        for (int b = 0; b < TILE_R; ++b) acc[a][b] += a_reg[a] * b_reg[b];
                }
                __syncthreads();                      // the tiles are overwritten next step
            }
            for (int a = 0; a < TILE_R; ++a)
                for (int b = 0; b < TILE_R; ++b) {
                    const int i = i0 + ty + a * t, j = j0 + tx + b * t;
                    if (i < m && j < n) C[(long long)i * n + j] = acc[a][b];
                }
        }
    }
}

#define IP_ENTRY_POINTS(T, SFX)                                                               \
    extern "C" __global__ void ip_rows_##SFX(const T* F, const T* G, T* out, int B, int H) {   \
        ip_rows<T>(F, G, out, B, H);                                                          \
    }                                                                                         \
    extern "C" __global__ void ip_rows_vjp_##SFX(const T* F, const T* G, const T* g, T* dF,    \
                                                 T* dG, int B, int H) {                       \
        ip_rows_vjp<T>(F, G, g, dF, dG, B, H);                                                \
    }                                                                                         \
    extern "C" __global__ void ip_rows_logistic_##SFX(const T* F, const T* G, const T* c,      \
                                                      int y, T* loss, T* dT, int B, int H) {  \
        ip_rows_logistic<T>(F, G, c, y, loss, dT, B, H);                                      \
    }                                                                                         \
    /* T = F G^T: (B, H) x (M, H) -> (B, M) */                                                \
    extern "C" __global__ void ip_pairs_##SFX(const T* F, const T* G, T* out, int B, int M,    \
                                              int H) {                                        \
        tiled_product<T, false, true>(F, G, out, B, M, H);                                    \
    }                                                                                         \
    /* dF = g G: (B, M) x (M, H) -> (B, H) */                                                 \
    extern "C" __global__ void ip_pairs_vjp_F_##SFX(const T* g, const T* G, T* dF, int B,      \
                                                    int M, int H) {                           \
        tiled_product<T, false, false>(g, G, dF, B, H, M);                                    \
    }                                                                                         \
    /* dG = g^T F: (M, B) x (B, H) -> (M, H) */                                               \
    extern "C" __global__ void ip_pairs_vjp_G_##SFX(const T* g, const T* F, T* dG, int B,      \
                                                    int M, int H) {                           \
        tiled_product<T, true, false>(g, F, dG, M, H, B);                                     \
    }

IP_ENTRY_POINTS(float, f32)
IP_ENTRY_POINTS(double, f64)
