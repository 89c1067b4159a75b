// cuda_emulation.h: run an UNCHANGED .cu file on the CPU with g++ (C++20).
//
//   g++ -std=c++20 -O2 -pthread -shared -fPIC driver.cpp -o kernels.so
//   where driver.cpp is:   #include "cuda_emulation.h"
//                          #include "inner_product.cu"
//                          EMU_EXPORT(ip_rows_f32)   // one line per kernel
//
// The model of execution, kept as close to CUDA's as a CPU allows:
//   * each CUDA thread of a block runs as one std::thread (blockDim.x*y*z of them);
//   * __syncthreads() is std::barrier::arrive_and_wait() on the block's barrier;
//   * __shared__ is `static`: one buffer that every thread of the block sees;
//   * blocks run one after another (x fastest, then y, then z).  The same threads
//     are reused for every block, with a barrier between blocks, so a launch
//     creates blockDim threads, not gridDim * blockDim;
//   * threadIdx, blockIdx, blockDim, gridDim are thread_local variables.
// Not emulated: warps (no __shfl_*, no implicit warp-synchronous code), atomics,
// dynamic shared memory, streams.  Kernels must call __syncthreads() uniformly,
// as CUDA requires anyway (a divergent barrier deadlocks here).  Launches from two
// host threads at once would share the static __shared__ buffers: launch serially.
//
// EMU_EXPORT(k) defines  extern "C" int emu_launch_k(gx, gy, gz, bx, by, bz, void** args):
// args holds one pointer per kernel argument, the convention of cuLaunchKernel, so
// ctypes can call every kernel the same way.  Returns 0, 1 for a bad launch shape, or 2 when
// a thread called __trap() (a blanked course task's kernel body does).
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

struct uint3 { unsigned int x = 0, y = 0, z = 0; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

namespace emu {
inline thread_local std::barrier<>* block_barrier = nullptr;
inline std::atomic<bool> trapped{false};   // set by __trap(): the launch then returns 2

template <typename... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

// One launch: blockDim threads, each walking through all blocks of the grid.
template <typename... A>
int launch(void (*kernel)(A...), dim3 grid, dim3 block, void** args) {
    const unsigned long long n_threads = 1ull * block.x * block.y * block.z;
    if (n_threads == 0 || n_threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0) return 1;
    std::barrier<> bar(static_cast<std::ptrdiff_t>(n_threads));
    auto body = [&](unsigned int tx, unsigned int ty, unsigned int tz) {
        threadIdx = {tx, ty, tz};
        blockDim = block;
        gridDim = grid;
        block_barrier = &bar;
        for (unsigned int bz = 0; bz < grid.z; ++bz)
            for (unsigned int by = 0; by < grid.y; ++by)
                for (unsigned int bx = 0; bx < grid.x; ++bx) {
                    blockIdx = {bx, by, bz};
                    call(kernel, args, std::index_sequence_for<A...>{});
                    bar.arrive_and_wait();  // the block ends: __shared__ may be reused
                }
    };
    std::vector<std::thread> threads;
    threads.reserve(n_threads);
    for (unsigned int tz = 0; tz < block.z; ++tz)
        for (unsigned int ty = 0; ty < block.y; ++ty)
            for (unsigned int tx = 0; tx < block.x; ++tx) threads.emplace_back(body, tx, ty, tz);
    for (auto& t : threads) t.join();
    return 0;
}
}  // namespace emu

// CUDA's sin(pi x) and cos(pi x) (no argument reduction of a large angle), which glibc lacks.
inline float sinpif(float x) { return static_cast<float>(std::sin(M_PI * static_cast<double>(x))); }
inline float cospif(float x) { return static_cast<float>(std::cos(M_PI * static_cast<double>(x))); }
inline double sinpi(double x) { return std::sin(M_PI * x); }
inline double cospi(double x) { return std::cos(M_PI * x); }

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }
// CUDA's __trap() aborts the kernel; here it marks the launch as failed (returns 2) and the
// thread goes on, so that every thread still reaches the block's barriers.
inline void __trap() { emu::trapped = true; }

#define EMU_EXPORT(kernel)                                                                    \
    extern "C" int emu_launch_##kernel(unsigned int gx, unsigned int gy, unsigned int gz,     \
                                       unsigned int bx, unsigned int by, unsigned int bz,     \
                                       void** args) {                                         \
        emu::trapped = false;                                                                 \
        const int rc = emu::launch(kernel, dim3(gx, gy, gz), dim3(bx, by, bz), args);         \
        return rc ? rc : (emu::trapped ? 2 : 0);                                              \
    }
