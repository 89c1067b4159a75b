// gemm.cu: the matrix products of one training step, C = op(A) op(B) with a fused epilogue,
// as one readable tiled kernel (the captured step of avb_minimal/fast/graph.py runs on it:
// cuBLAS cannot be called while a CUDA graph is being captured).
//
// Entry points (suffix _f32 for float, _f64 for double); C: (m, n), A and B as stored:
//   gemm_nn   C = A B        A: (m, k), B: (k, n)     forward h W, bias row sums
//   gemm_nt   C = A B^T      A: (m, k), B: (n, k)     backward d W^T; all-pairs logits F G^T
//   gemm_tn   C = A^T B      A: (k, m), B: (k, n)     backward h^T d (weight gradients)
// Arguments (A, B, C, bias, E, m, n, k, lda, ldb, ldc, batch, sA, sB, sC, epi):
//   lda, ldb, ldc  row strides in elements of A, B, C as stored (the last axis is contiguous),
//                  so row blocks and strided views are operands without copies;
//   batch, sA, sB, sC   `batch` independent products, the z-th on A + z sA, B + z sB, C + z sC
//                  (the noise-basis encoder's per-basis products); batch 1 for one product;
//   epi            what happens to each c = sum_l op(A)(i, l) op(B)(l, j) on its way out:
//     0 STORE       C = c
//     1 ACCUMULATE  C = C + c
//     2 BIAS        C = c + bias[j]                           bias: (batch, n), contiguous
//     3 BIAS_ELU    C = elu(c + bias[j])                      a hidden layer's forward pass
//     4 ELU_GRAD    C = c * elu'(.) = c * (min(E, 0) + 1)     E: the ELU's output, laid out as C
//   Pointers an epilogue does not read may be null.
//
// Launch shape (as the all-pairs kernels of inner_product.cu): block (t, t), t <= 16 (the GPU
// default is 16); each block owns an S x S tile of C, S = 4t, and each thread 4 x 4 of its
// outputs in registers; grid (gx, gy, gz): column tiles along x, row tiles along y, products
// along z, each walked with a grid-stride loop, so any grid is correct.  Each step of the
// k-loop stages an S x 16 slice of op(A) and a 16 x S slice of op(B) in shared memory.
// Loop bounds depend only on blockIdx and sizes: every thread reaches every __syncthreads().

#define GEMM_R 4       // outputs per thread along each axis
#define GEMM_BK 16     // depth of one shared-memory step
#define GEMM_S_MAX 64  // largest tile S = GEMM_R * blockDim.x, so blockDim.x <= 16

enum Epilogue { STORE = 0, ACCUMULATE = 1, BIAS = 2, BIAS_ELU = 3, ELU_GRAD = 4 };

__device__ inline float expm1_(float t) { return expm1f(t); }
__device__ inline double expm1_(double t) { return expm1(t); }

// elu(a) = a for a > 0, e^a - 1 otherwise (nn.elu_)
template <typename T>
__device__ T elu(T a) { return a > T(0) ? a : expm1_(a); }

template <typename T>
__device__ T epilogue(int epi, T c, const T* C, const T* bias, const T* E, long long o, int j) {
    switch (epi) {
        case ACCUMULATE: return C[o] + c;
        case BIAS: return c + bias[j];
        case BIAS_ELU: return elu(c + bias[j]);
        case ELU_GRAD: return c * ((E[o] < T(0) ? E[o] : T(0)) + T(1));   // elu'(a) from elu(a)
        default: return c;
    }
}

template <typename T, bool A_T, bool B_T>
__device__ void gemm(const T* A, const T* Bm, T* C, const T* bias, const T* E, int m, int n,
                     int k, int lda, int ldb, int ldc, int batch, int sA, int sB, int sC, int epi) {
    __shared__ T As[GEMM_S_MAX][GEMM_BK + 1];     // As[r][c] = op(A)(i0 + r, l0 + c)
    __shared__ T Bs[GEMM_BK][GEMM_S_MAX + 1];     // Bs[r][c] = op(B)(l0 + r, j0 + c)
    const int t = blockDim.x, tx = threadIdx.x, ty = threadIdx.y;
    const int S = GEMM_R * t, tid = ty * t + tx, n_threads = t * t;
    if (blockDim.y != blockDim.x || S > GEMM_S_MAX) return;  // uniform over the block
    for (int z = blockIdx.z; z < batch; z += gridDim.z) {
        const T* Az = A + (long long)z * sA;
        const T* Bz = Bm + (long long)z * sB;
        T* Cz = C + (long long)z * sC;
        const T* Ez = E ? E + (long long)z * sC : nullptr;
        const T* bz = bias ? bias + (long long)z * n : nullptr;
        for (int i0 = blockIdx.y * S; i0 < m; i0 += gridDim.y * S) {
            for (int j0 = blockIdx.x * S; j0 < n; j0 += gridDim.x * S) {
                T acc[GEMM_R][GEMM_R];
                for (int a = 0; a < GEMM_R; ++a)
                    for (int b = 0; b < GEMM_R; ++b) acc[a][b] = T(0);
                for (int l0 = 0; l0 < k; l0 += GEMM_BK) {
                    for (int e = tid; e < S * GEMM_BK; e += n_threads) {
                        // consecutive e walk along the stored rows of A (coalesced reads)
                        const int r = A_T ? e % S : e / GEMM_BK, c = A_T ? e / S : e % GEMM_BK;
                        const int i = i0 + r, l = l0 + c;
                        As[r][c] = (i < m && l < k)
                                       ? Az[A_T ? (long long)l * lda + i : (long long)i * lda + l] : T(0);
                    }
                    for (int e = tid; e < GEMM_BK * S; e += n_threads) {
                        const int r = B_T ? e % GEMM_BK : e / S, c = B_T ? e / GEMM_BK : e % S;
                        const int l = l0 + r, j = j0 + c;
                        Bs[r][c] = (l < k && j < n)
                                       ? Bz[B_T ? (long long)j * ldb + l : (long long)l * ldb + j] : T(0);
                    }
                    __syncthreads();
                    for (int c = 0; c < GEMM_BK; ++c) {
                        T a_reg[GEMM_R], b_reg[GEMM_R];
                        for (int a = 0; a < GEMM_R; ++a) a_reg[a] = As[ty + a * t][c];
                        for (int b = 0; b < GEMM_R; ++b) b_reg[b] = Bs[c][tx + b * t];
                        for (int a = 0; a < GEMM_R; ++a)
                            for (int b = 0; b < GEMM_R; ++b) acc[a][b] += a_reg[a] * b_reg[b];
                    }
                    __syncthreads();                  // the tiles are overwritten next step
                }
                for (int a = 0; a < GEMM_R; ++a)
                    for (int b = 0; b < GEMM_R; ++b) {
                        const int i = i0 + ty + a * t, j = j0 + tx + b * t;
                        if (i < m && j < n) {
                            const long long o = (long long)i * ldc + j;
                            Cz[o] = epilogue(epi, acc[a][b], Cz, bz, Ez, o, j);
                        }
                    }
            }
        }
    }
}

#define GEMM_ENTRY_POINTS(T, SFX)                                                             \
    /* C = A B */                                                                             \
    extern "C" __global__ void gemm_nn_##SFX(const T* A, const T* B, T* C, const T* bias,      \
                                             const T* E, int m, int n, int k, int lda,        \
                                             int ldb, int ldc, int batch, int sA, int sB,     \
                                             int sC, int epi) {                               \
        gemm<T, false, false>(A, B, C, bias, E, m, n, k, lda, ldb, ldc, batch, sA, sB, sC, epi); \
    }                                                                                         \
    /* C = A B^T */                                                                           \
    extern "C" __global__ void gemm_nt_##SFX(const T* A, const T* B, T* C, const T* bias,      \
                                             const T* E, int m, int n, int k, int lda,        \
                                             int ldb, int ldc, int batch, int sA, int sB,     \
                                             int sC, int epi) {                               \
        gemm<T, false, true>(A, B, C, bias, E, m, n, k, lda, ldb, ldc, batch, sA, sB, sC, epi); \
    }                                                                                         \
    /* C = A^T B */                                                                           \
    extern "C" __global__ void gemm_tn_##SFX(const T* A, const T* B, T* C, const T* bias,      \
                                             const T* E, int m, int n, int k, int lda,        \
                                             int ldb, int ldc, int batch, int sA, int sB,     \
                                             int sC, int epi) {                               \
        gemm<T, true, false>(A, B, C, bias, E, m, n, k, lda, ldb, ldc, batch, sA, sB, sC, epi); \
    }

GEMM_ENTRY_POINTS(float, f32)
GEMM_ENTRY_POINTS(double, f64)
