// device_math.cuh: the scalar helpers and the row reduction that both kernel files use
// (bernoulli.cu and inner_product.cu).  Included, not compiled on its own.
#pragma once

// Scalar helpers, spelled out per type so that float stays float on every compiler.
__device__ inline float relu(float t) { return fmaxf(t, 0.0f); }
__device__ inline double relu(double t) { return fmax(t, 0.0); }
__device__ inline float exp_neg_abs(float t) { return expf(-fabsf(t)); }    // e^{-|t|} in (0, 1]
__device__ inline double exp_neg_abs(double t) { return exp(-fabs(t)); }
__device__ inline float log1p_(float t) { return log1pf(t); }
__device__ inline double log1p_(double t) { return log1p(t); }
// softplus(t) = log(1 + e^t) = max(t, 0) + log1p(e^{-|t|}): nothing overflows.
template <typename T>
__device__ T softplus(T t) { return relu(t) + log1p_(exp_neg_abs(t)); }
// sigma(t) = 1 / (1 + e^{-t}), computed from e^{-|t|} so that nothing overflows.
template <typename T>
__device__ T sigmoid(T t) {
    const T e = exp_neg_abs(t);
    return t >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

// Sum of v over the blockDim.x threads of this thread's row (threadIdx.y), returned to
// the thread with threadIdx.x == 0 (the others get 0).  Every thread must call it.
template <typename T>
__device__ T row_sum(T v) {
    __shared__ T partial[1024];                       // (by, bx) partial sums
    const int tx = threadIdx.x, base = threadIdx.y * blockDim.x;
    partial[base + tx] = v;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (tx < stride) partial[base + tx] += partial[base + tx + stride];
        __syncthreads();
    }
    return tx == 0 ? partial[base] : T(0);
}
