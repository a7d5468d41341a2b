// A CPU emulation of the CUDA C++ kernels (csrc/*.cu), for checking their logic on machines without a GPU:
// force-included (-include) before everything when tests/cuda_emu/emu_ops.cpp is compiled as plain C++ with
// -DSPECCAS_EMULATE. Each thread of a block is a fiber (ucontext) on one OS thread; blocks run one after
// another in index order; __syncthreads, __syncwarp and the warp shuffles are barriers at which the scheduler
// switches fibers (a fiber starts with swapcontext, then switches with _setjmp/_longjmp: no system call); a
// thread that has returned counts as arrived, as on the GPU. Shared memory is `static`
// (one block at a time). Atomics are plain (one OS thread). What this checks: indexing, tickets, merges,
// the decisions, tokens. What it cannot: memory ordering between blocks, timing, occupancy.
#pragma once

#include <setjmp.h>
#include <ucontext.h>

#include <c10/util/Half.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct float4 {
  float x, y, z, w;
};
struct double2 {
  double x, y;
};
struct uint2 {
  unsigned x, y;
};
struct emu_dim3 {
  unsigned x, y, z;
};
struct __half {
  unsigned short b;
};

typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0 };
enum cudaStreamCaptureStatus { cudaStreamCaptureStatusNone = 0, cudaStreamCaptureStatusActive = 1 };
inline cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus* s) {
  *s = cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) {
  std::memset(p, v, n);
  return cudaSuccess;
}

namespace emu_rt {

constexpr int kMaxThreads = 1024;
constexpr size_t kStack = 256 * 1024;
enum : int { kReady = 0, kWaitBlock = 1, kWaitWarp = 2, kDone = 3 };

struct State {
  ucontext_t sched, start;
  ucontext_t ctx[kMaxThreads];
  jmp_buf sched_jb;
  jmp_buf jb[kMaxThreads];
  bool started[kMaxThreads] = {};
  char* stacks[kMaxThreads] = {};
  int state[kMaxThreads] = {};
  uint64_t slot[kMaxThreads] = {};
  int n = 0, cur = 0;
  unsigned block = 0;
  std::function<void()> body;
  long spins = 0;
};

inline State& S() {
  static State s;
  return s;
}

inline emu_dim3 thread_idx() { return emu_dim3{static_cast<unsigned>(S().cur), 0u, 0u}; }
inline emu_dim3 block_idx() { return emu_dim3{S().block, 0u, 0u}; }

inline void to_scheduler() {
  State& s = S();
  if (_setjmp(s.jb[s.cur]) == 0) _longjmp(s.sched_jb, 1);
}
inline void block_barrier() {
  S().state[S().cur] = kWaitBlock;
  to_scheduler();
}
inline void warp_barrier() {
  S().state[S().cur] = kWaitWarp;
  to_scheduler();
}

inline void entry() {
  State& s = S();
  s.body();
  s.state[s.cur] = kDone;
  _longjmp(s.sched_jb, 1);
}

// Run fiber t until it waits or ends.
inline void resume(int t) {
  State& s = S();
  s.cur = t;
  if (_setjmp(s.sched_jb) == 0) {
    if (!s.started[t]) {
      s.started[t] = true;
      swapcontext(&s.start, &s.ctx[t]);
    } else {
      _longjmp(s.jb[t], 1);
    }
  }
}

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "speccas CUDA emulation: %s (block %u, thread %d)\n", what, S().block, S().cur);
  std::abort();
}

inline void run_blocks(int64_t blocks, int threads) {
  State& s = S();
  if (threads > kMaxThreads || threads % 32 != 0) fail("bad block size");
  for (int t = 0; t < threads; ++t) {
    if (s.stacks[t] == nullptr) s.stacks[t] = static_cast<char*>(std::malloc(kStack));
  }
  s.n = threads;
  for (int64_t b = 0; b < blocks; ++b) {
    s.block = static_cast<unsigned>(b);
    for (int t = 0; t < threads; ++t) {
      getcontext(&s.ctx[t]);
      s.ctx[t].uc_stack.ss_sp = s.stacks[t];
      s.ctx[t].uc_stack.ss_size = kStack;
      s.ctx[t].uc_link = &s.sched;
      makecontext(&s.ctx[t], entry, 0);
      s.state[t] = kReady;
      s.started[t] = false;
    }
    for (;;) {
      bool ran = false;
      for (int t = 0; t < threads; ++t) {
        if (s.state[t] != kReady) continue;
        resume(t);
        ran = true;
      }
      int alive = 0, at_block = 0;
      for (int t = 0; t < threads; ++t) {
        alive += s.state[t] != kDone;
        at_block += s.state[t] == kWaitBlock;
      }
      if (alive == 0) break;
      bool released = false;
      if (at_block == alive) {
        for (int t = 0; t < threads; ++t)
          if (s.state[t] == kWaitBlock) s.state[t] = kReady;
        released = true;
      }
      for (int w = 0; w < threads / 32; ++w) {
        int live = 0, waiting = 0;
        for (int l = 0; l < 32; ++l) {
          live += s.state[32 * w + l] != kDone;
          waiting += s.state[32 * w + l] == kWaitWarp;
        }
        if (live > 0 && waiting == live) {
          for (int l = 0; l < 32; ++l)
            if (s.state[32 * w + l] == kWaitWarp) s.state[32 * w + l] = kReady;
          released = true;
        }
      }
      if (!ran && !released) fail("deadlock: every live thread waits at a barrier that cannot complete");
    }
  }
}

template <typename... P, typename... A>
inline void run(void (*kernel)(P...), int64_t blocks, int threads, A... args) {
  S().body = [&]() { kernel(args...); };
  run_blocks(blocks, threads);
  S().body = nullptr;
}

template <typename T>
inline uint64_t bits(T v) {
  static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <typename T>
inline T unbits(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}
template <typename T>
inline T shuffle_from(T v, int src_lane) {
  State& s = S();
  const int base = s.cur & ~31;
  s.slot[s.cur] = bits(v);
  warp_barrier();
  const uint64_t got = s.slot[base + src_lane];
  warp_barrier();
  return unbits<T>(got);
}

}  // namespace emu_rt

#define threadIdx (::emu_rt::thread_idx())
#define blockIdx (::emu_rt::block_idx())

inline void __syncthreads() { emu_rt::block_barrier(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu_rt::warp_barrier(); }
inline int __syncthreads_or(int p) {
  emu_rt::State& s = emu_rt::S();
  s.slot[s.cur] = p != 0;
  emu_rt::block_barrier();
  int any = 0;
  for (int t = 0; t < s.n; ++t) any |= s.state[t] != emu_rt::kDone && s.slot[t] != 0;
  emu_rt::block_barrier();
  return any;
}
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int o) {
  return emu_rt::shuffle_from(v, (emu_rt::S().cur & 31) ^ o);
}
template <typename T>
inline T __shfl_sync(unsigned, T v, int src) {
  return emu_rt::shuffle_from(v, src & 31);
}
template <typename T>
inline T __shfl_up_sync(unsigned, T v, unsigned d) {
  const int lane = emu_rt::S().cur & 31;
  const T got = emu_rt::shuffle_from(v, lane >= static_cast<int>(d) ? lane - static_cast<int>(d) : lane);
  return got;
}
inline unsigned __ballot_sync(unsigned, int p) {
  emu_rt::State& s = emu_rt::S();
  const int base = s.cur & ~31;
  s.slot[s.cur] = p != 0;
  emu_rt::warp_barrier();
  unsigned m = 0;
  for (int l = 0; l < 32; ++l)
    if (s.state[base + l] != emu_rt::kDone && s.slot[base + l] != 0) m |= 1u << l;
  emu_rt::warp_barrier();
  return m;
}
inline int __any_sync(unsigned mask, int p) { return __ballot_sync(mask, p) != 0; }

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
template <typename T>
inline T __ldcg(const T* p) {
  return *p;
}
template <typename T>
inline T atomicAdd(T* p, T v) {
  const T o = *p;
  *p = o + v;
  return o;
}
template <typename T>
inline T atomicExch(T* p, T v) {
  const T o = *p;
  *p = v;
  return o;
}
inline void __threadfence() {}
inline void __nanosleep(unsigned) {
  if (++emu_rt::S().spins > 100000000L) emu_rt::fail("a spin wait never ended");
  emu_rt::to_scheduler();
}
[[noreturn]] inline void __trap() { emu_rt::fail("__trap"); }

inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline unsigned __float_as_uint(float x) {
  unsigned u;
  std::memcpy(&u, &x, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
inline int __float_as_int(float x) {
  int u;
  std::memcpy(&u, &x, 4);
  return u;
}
inline float __int_as_float(int u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
inline long long __double_as_longlong(double x) {
  long long u;
  std::memcpy(&u, &x, 8);
  return u;
}
inline double __longlong_as_double(long long u) {
  double x;
  std::memcpy(&x, &u, 8);
  return x;
}
inline __half __ushort_as_half(unsigned short b) { return __half{b}; }
inline float __half2float(__half h) { return static_cast<float>(c10::Half(h.b, c10::Half::from_bits())); }
inline unsigned long long __float2ull_rn(float x) {
  return static_cast<unsigned long long>(std::nearbyint(static_cast<double>(x)));
}
inline unsigned long long __double2ull_rn(double x) { return static_cast<unsigned long long>(std::nearbyint(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }

// cuda_common.cuh's hooks.
inline unsigned ld_acquire(const unsigned* p) { return *p; }
inline void st_release(unsigned* p, unsigned v) { *p = v; }
inline uint64_t global_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}
inline int64_t emu_min_chunk(int64_t fallback) {
  const char* e = std::getenv("SPECCAS_EMU_MIN_CHUNK");
  return e != nullptr ? std::atoll(e) : fallback;
}
template <typename... P, typename... A>
inline void launch(void (*kernel)(P...), int64_t blocks, int threads, cudaStream_t, A... args) {
  emu_rt::run(kernel, blocks, threads, args...);
}
