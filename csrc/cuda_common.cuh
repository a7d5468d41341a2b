// Device building blocks of the CUDA ops (verify_cuda.cu, sample_cuda.cu): block reductions,
// loads as the compute type, and chunk planning. The math (Philox, exp/log, rules) is the host's
// own code from philox.h / rules.h, so a CUDA build draws the same numbers as the CPU build.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "philox.h"
#include "rules.h"

namespace speccas {
namespace cuda {

constexpr int kThreads = 256;  // threads per block, a multiple of 32
constexpr int kWarps = kThreads / 32;

template <typename T>
__device__ __forceinline__ T neg_inf() {
  return -static_cast<T>(INFINITY);
}

template <typename in_t, typename acc_t>
__device__ __forceinline__ acc_t load_as(const in_t* p) {
  return static_cast<acc_t>(static_cast<float>(*p));
}
template <>
__device__ __forceinline__ float load_as<float, float>(const float* p) {
  return __ldg(p);
}
template <>
__device__ __forceinline__ double load_as<double, double>(const double* p) {
  return __ldg(p);
}

// Correctly rounded division whatever --use_fast_math (-prec-div=false) says.
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

__device__ __forceinline__ float dexp(float x) { return sc_expf(x); }
__device__ __forceinline__ double dexp(double x) { return exp(x); }
__device__ __forceinline__ float dlog(float x) { return sc_logf(x); }
__device__ __forceinline__ double dlog(double x) { return log(x); }

// Block-wide reductions; every thread gets the result. `sh` holds kWarps entries of T.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

template <typename T>
__device__ T block_sum(T v, T* sh) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  T t = lane < kWarps ? sh[lane] : T(0);
  return warp_sum(t);
}

template <typename T>
__device__ T block_max(T v, T* sh) {
  v = warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  T t = lane < kWarps ? sh[lane] : neg_inf<T>();
  return warp_max(t);
}

__device__ __forceinline__ int64_t warp_min_i64(int64_t v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const int64_t w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w < v ? w : v;
  }
  return v;
}

__device__ int64_t block_min_i64(int64_t v, int64_t* sh) {
  v = warp_min_i64(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  int64_t t = lane < kWarps ? sh[lane] : INT64_MAX;
  return warp_min_i64(t);
}

// First index of the maximum of (value, index) pairs held by the block's threads.
template <typename T>
__device__ void block_argmax(T& v, int64_t& idx, T* shv, int64_t* shi) {
  const T m = block_max(v, shv);
  int64_t cand = (v == m && idx >= 0) ? idx : INT64_MAX;
  cand = block_min_i64(cand, shi);
  v = m;
  idx = cand == INT64_MAX ? -1 : cand;
}

inline int64_t ceil_div_h(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Chunks per position: enough blocks to fill the GPU when positions are few (split vocabulary).
inline int64_t plan_chunks_cuda(int64_t positions, int64_t V, int sms) {
  const int64_t want = ceil_div_h(4LL * sms, positions > 0 ? positions : 1);
  int64_t nch = want < ceil_div_h(V, 4096) ? want : ceil_div_h(V, 4096);
  return nch < 1 ? 1 : nch;
}

}  // namespace cuda
}  // namespace speccas
