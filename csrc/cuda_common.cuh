// Device building blocks of the CUDA ops (verify_cuda.cu, sample_cuda.cu, cuda_cutoff.cuh): loads of four
// vocabulary entries as the compute type, warp and block reductions, the argmax order, "last block done"
// tickets, per-row parameters, the sampling probabilities of SPEC.md section 2, and the host side (chunk
// planning, the persistent ticket counters, scratch carving). The math (Philox, exp/log, rules) is the host's
// own code from philox.h / rules.h, so a CUDA build draws the same numbers as the CPU build.
//
// Conventions: every kernel runs kThreads threads; vocabulary entries are visited in groups of four aligned
// to a multiple of 4 (one Philox call serves a group); chunk boundaries are multiples of 4; int64 offsets
// everywhere. Device helpers take structs by value (all __forceinline__), so nothing is addressed through a
// reference into local memory.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cfloat>
#include <cstdint>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "philox.h"
#include "rules.h"
#include "speccas.h"

namespace speccas {
namespace cuda {

constexpr int kThreads = 256;  // threads per block, a multiple of 32
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;
constexpr int64_t kNoIndex = INT64_MAX;  // "no entry yet" in an argmax (loses every tie)

// ---- scalars ----------------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ T neg_inf() {
  return -static_cast<T>(INFINITY);
}
template <typename T>
__device__ __forceinline__ T max_finite() {
  return sizeof(T) == sizeof(double) ? static_cast<T>(DBL_MAX) : static_cast<T>(FLT_MAX);
}
template <typename T>
__device__ __forceinline__ bool is_finite(T x) {
  return (x - x) == T(0);  // false for NaN and +-inf
}

// Correctly rounded division whatever --use_fast_math (-prec-div=false) says.
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

__device__ __forceinline__ float dexp(float x) { return sc_expf(x); }
__device__ __forceinline__ double dexp(double x) { return exp(x); }
__device__ __forceinline__ float dlog(float x) { return sc_logf(x); }
__device__ __forceinline__ double dlog(double x) { return log(x); }

// reference.inv_temperature: 1/T rounded once in the compute dtype, capped at its largest finite value; 1 for
// T = 0 (greedy: the scores are not used) or an invalid T.
template <typename T>
__device__ __forceinline__ T inv_temperature(T t) {
  const bool ok = t > T(0) && is_finite(t);
  const T inv = div_rn(T(1), ok ? t : T(1));
  return inv < max_finite<T>() ? inv : max_finite<T>();
}

// Read-only loads through the texture path (__ldg) or L2 only (__ldcg: data another block of the same launch
// wrote), for the types the kernels use (int64_t is `long` on LP64, which the intrinsics do not all take).
template <typename T>
__device__ __forceinline__ T ldg(const T* p) {
  if constexpr (std::is_same_v<T, int64_t>) {
    return static_cast<T>(__ldg(reinterpret_cast<const long long*>(p)));
  } else {
    return __ldg(p);
  }
}
template <typename T>
__device__ __forceinline__ T ldcg(const T* p) {
  if constexpr (std::is_same_v<T, int64_t>) {
    return static_cast<T>(__ldcg(reinterpret_cast<const long long*>(p)));
  } else {
    return __ldcg(p);
  }
}

// A per-row parameter: the [B] tensor's element, or the one value every row shares (a kernel argument).
template <typename T>
struct RowArg {
  const T* p;
  T v;
  __device__ __forceinline__ T at(int64_t b) const { return p != nullptr ? ldg(p + b) : v; }
};

template <typename T, typename V>
RowArg<T> row_arg(const RowParam<V>& r) {
  return RowArg<T>{r.per_row() ? r.t.template data_ptr<T>() : nullptr, static_cast<T>(r.v)};
}

// ---- loads --------------------------------------------------------------------------------------------

template <typename in_t, typename acc_t>
__device__ __forceinline__ acc_t to_acc(in_t x);
template <>
__device__ __forceinline__ float to_acc<float, float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ double to_acc<double, double>(double x) {
  return x;
}

__device__ __forceinline__ float bf16_bits_to_float(unsigned short b) { return __uint_as_float(unsigned(b) << 16); }
__device__ __forceinline__ float half_bits_to_float(unsigned short b) { return __half2float(__ushort_as_half(b)); }

template <typename in_t>
struct Raw;  // how one entry is read
template <>
struct Raw<float> {
  static __device__ __forceinline__ float one(const float* p) { return __ldg(p); }
};
template <>
struct Raw<double> {
  static __device__ __forceinline__ double one(const double* p) { return __ldg(p); }
};
template <>
struct Raw<c10::BFloat16> {
  static __device__ __forceinline__ float one(const c10::BFloat16* p) {
    return bf16_bits_to_float(__ldg(reinterpret_cast<const unsigned short*>(p)));
  }
};
template <>
struct Raw<c10::Half> {
  static __device__ __forceinline__ float one(const c10::Half* p) {
    return half_bits_to_float(__ldg(reinterpret_cast<const unsigned short*>(p)));
  }
};

// One entry as the compute type.
template <typename in_t, typename acc_t>
__device__ __forceinline__ acc_t load1(const in_t* row, int64_t v) {
  return static_cast<acc_t>(Raw<in_t>::one(row + v));
}

// Whether a row's groups of four start on the vector width (16 bytes for float/double, 8 for 16-bit types).
template <typename in_t>
__device__ __forceinline__ bool vec_aligned(const in_t* row) {
  constexpr uintptr_t a = sizeof(in_t) == 8 ? 16 : 4 * sizeof(in_t);
  return (reinterpret_cast<uintptr_t>(row) % a) == 0;
}

// Entries v0 .. v0 + 3 (v0 a multiple of 4) as the compute type; entries at or beyond `hi` read nothing and
// give -inf (callers test v < hi before using them). One vector load when the group is whole and aligned.
template <typename in_t, typename acc_t>
struct Group4 {
  acc_t x0, x1, x2, x3;
  __device__ __forceinline__ acc_t get(int j) const { return j == 0 ? x0 : (j == 1 ? x1 : (j == 2 ? x2 : x3)); }
};

// Groups a thread loads before using the first, in the streaming passes: 32 bytes in flight per thread.
template <typename in_t>
constexpr int kGroupsInFlight = sizeof(in_t) >= 8 ? 1 : static_cast<int>(32 / (4 * sizeof(in_t)));

template <typename in_t, typename acc_t>
__device__ __forceinline__ Group4<in_t, acc_t> load4(const in_t* row, int64_t v0, int64_t hi, bool vec) {
  Group4<in_t, acc_t> g;
  if (vec && v0 + 4 <= hi) {
    if constexpr (std::is_same_v<in_t, float>) {
      const float4 f = __ldg(reinterpret_cast<const float4*>(row + v0));
      g.x0 = f.x, g.x1 = f.y, g.x2 = f.z, g.x3 = f.w;
    } else if constexpr (std::is_same_v<in_t, double>) {
      const double2 a = __ldg(reinterpret_cast<const double2*>(row + v0));
      const double2 b = __ldg(reinterpret_cast<const double2*>(row + v0 + 2));
      g.x0 = a.x, g.x1 = a.y, g.x2 = b.x, g.x3 = b.y;
    } else {
      const uint2 u = __ldg(reinterpret_cast<const uint2*>(row + v0));
      const auto cvt = [](unsigned short b) {
        return std::is_same_v<in_t, c10::BFloat16> ? bf16_bits_to_float(b) : half_bits_to_float(b);
      };
      g.x0 = static_cast<acc_t>(cvt(static_cast<unsigned short>(u.x & 0xffffu)));
      g.x1 = static_cast<acc_t>(cvt(static_cast<unsigned short>(u.x >> 16)));
      g.x2 = static_cast<acc_t>(cvt(static_cast<unsigned short>(u.y & 0xffffu)));
      g.x3 = static_cast<acc_t>(cvt(static_cast<unsigned short>(u.y >> 16)));
    }
    return g;
  }
  const acc_t ninf = neg_inf<acc_t>();
  g.x0 = v0 < hi ? load1<in_t, acc_t>(row, v0) : ninf;
  g.x1 = v0 + 1 < hi ? load1<in_t, acc_t>(row, v0 + 1) : ninf;
  g.x2 = v0 + 2 < hi ? load1<in_t, acc_t>(row, v0 + 2) : ninf;
  g.x3 = v0 + 3 < hi ? load1<in_t, acc_t>(row, v0 + 3) : ninf;
  return g;
}

// ---- random numbers -------------------------------------------------------------------------------------

// philox.h's draws for one entry, with the group's word picked by selects (philox.h indexes its word array with
// v & 3, which would put the four words in local memory).
__device__ __forceinline__ uint32_t pick_word(const Philox4& r, int64_t v) {
  const int l = static_cast<int>(v & 3);
  return l == 0 ? r.w[0] : (l == 1 ? r.w[1] : (l == 2 ? r.w[2] : r.w[3]));
}
__device__ __forceinline__ float gumbel_at(int64_t seed, int64_t pos, uint32_t stream, int64_t v) {
  return bits_to_gumbel(pick_word(philox_group(seed, pos, stream, v >> 2), v));
}
__device__ __forceinline__ float uniform_at(int64_t seed, int64_t pos, uint32_t stream) {
  return bits_to_uniform(philox_group(seed, pos, stream, 0).w[0]);  // entry 0: word 0
}

// Block-index arithmetic in 32 bits (grids stay below 2**31 items): q = a / d, r = a - q d.
__device__ __forceinline__ void split_item(int64_t a, int64_t d, int64_t& q, int64_t& r) {
  const unsigned qa = static_cast<unsigned>(a) / static_cast<unsigned>(d);
  q = qa;
  r = a - static_cast<int64_t>(qa) * d;
}

// ---- reductions ---------------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const T w = __shfl_xor_sync(kFull, v, o);
    v = w > v ? w : v;
  }
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_min(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const T w = __shfl_xor_sync(kFull, v, o);
    v = w < v ? w : v;
  }
  return v;
}

// The argmax order of SPEC.md section 5: the larger score, ties to the lower index (argmax_first).
template <typename T>
__device__ __forceinline__ bool better(T v1, int64_t i1, T v2, int64_t i2) {
  return v1 > v2 || (v1 == v2 && i1 < i2);
}

template <typename T>
__device__ __forceinline__ void take_if_better(T& v, int64_t& i, T v2, int64_t i2) {
  if (better(v2, i2, v, i)) {
    v = v2;
    i = i2;
  }
}

template <typename T>
__device__ __forceinline__ void warp_argmax(T& v, int64_t& i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const T v2 = __shfl_xor_sync(kFull, v, o);
    const int64_t i2 = __shfl_xor_sync(kFull, i, o);
    take_if_better(v, i, v2, i2);
  }
}

// Block-wide reductions over NW warps (the block's size); every thread gets the result. Scratch: NW entries.
template <typename T, int NW = kWarps>
__device__ __forceinline__ T block_sum(T v, T* sh) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  return warp_sum(lane < NW ? sh[lane] : T(0));
}

template <typename T, int NW = kWarps>
__device__ __forceinline__ T block_max(T v, T* sh) {
  v = warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  return warp_max(lane < NW ? sh[lane] : neg_inf<T>());
}

template <typename T, int NW = kWarps>
__device__ __forceinline__ T block_min(T v, T* sh) {
  v = warp_min(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  return warp_min(lane < NW ? sh[lane] : static_cast<T>(INFINITY));
}

template <typename T, int NW = kWarps>
__device__ __forceinline__ void block_argmax(T& v, int64_t& i, T* shv, int64_t* shi) {
  warp_argmax(v, i);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) {
    shv[warp] = v;
    shi[warp] = i;
  }
  __syncthreads();
  v = lane < NW ? shv[lane] : neg_inf<T>();
  i = lane < NW ? shi[lane] : kNoIndex;
  warp_argmax(v, i);
}

// The max of row[lo, hi) (lo a multiple of 4), its lowest index and whether a NaN or +inf was seen, by the whole
// block of NT threads; every thread gets them. kGroupsInFlight groups loaded before the first is used.
template <typename in_t, typename acc_t, int NT = kThreads>
__device__ __forceinline__ void block_scan_max(const in_t* row, int64_t lo, int64_t hi, acc_t& m, int64_t& am,
                                               int& bad) {
  __shared__ acc_t sh_v[NT / 32];
  __shared__ int64_t sh_i[NT / 32];
  const bool vec = vec_aligned(row);
  m = neg_inf<acc_t>();
  am = kNoIndex;
  bad = 0;
  constexpr int U = kGroupsInFlight<in_t>;
  constexpr int64_t step = 4 * NT;
  for (int64_t v0 = lo + 4 * static_cast<int64_t>(threadIdx.x); v0 < hi; v0 += U * step) {
    Group4<in_t, acc_t> g[U];
#pragma unroll
    for (int u = 0; u < U; ++u) g[u] = load4<in_t, acc_t>(row, v0 + u * step, hi, vec);
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t v = v0 + u * step + j;
        const acc_t x = g[u].get(j);  // -inf beyond hi
        bad |= (x != x) | (x == static_cast<acc_t>(INFINITY));
        if (x > m) {
          m = x;
          am = v;
        }
      }
    }
  }
  block_argmax<acc_t, NT / 32>(m, am, sh_v, sh_i);
  bad = __syncthreads_or(bad);
}

// ---- tickets and flags --------------------------------------------------------------------------------

// "Last block done": called by every thread of the block after the block wrote its partial result. The
// block that brings the counter to `expected` gets true (in all its threads), resets the counter to 0 for the
// next launch (every arrival has happened) and may read every partial (after its own fence).
__device__ __forceinline__ bool arrive_last(unsigned* counter, unsigned expected) {
  __shared__ int s_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned t = atomicAdd(counter, 1u);
    const int last = t + 1u == expected;
    if (last) atomicExch(counter, 0u);
    s_last = last;
  }
  __syncthreads();
  const bool last = s_last != 0;
  if (last) __threadfence();
  return last;
}

// SPECCAS_EMULATE: the CPU emulation of these kernels (tests/cuda_emu) supplies these three and `launch`.
#if !defined(SPECCAS_EMULATE)
__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void st_release(unsigned* p, unsigned v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#endif

// ---- the distributions of SPEC.md section 2 -----------------------------------------------------------

// A position's merged statistics: max logit, sum exp(z - M) (T = 1, unfiltered), sum of exp((z - M) / T) over
// the kept entries, the filter cutoff (keep z >= cut; -inf: no filter), the lowest argmax.
template <typename T>
struct PosView {
  T M, S1, ST, cut;
  int64_t amax;
};

// The sampling probability at entry v (logit z): one-hot at the lowest argmax at T = 0, else
// exp((z - M) * (1/T)) / ST over the kept entries (reference._distributions).
template <typename T>
__device__ __forceinline__ T sample_prob(T z, int64_t v, PosView<T> s, T temp, T inv_t) {
  if (temp == T(0)) return v == s.amax ? T(1) : T(0);
  if (!(z >= s.cut)) return T(0);
  return div_rn(dexp(mul_rn(z - s.M, inv_t)), s.ST);
}

// The unscaled, unfiltered probability softmax(z)(v) the rule statistics read.
template <typename T>
__device__ __forceinline__ T unscaled_prob(T z, PosView<T> s) {
  return div_rn(dexp(z - s.M), s.S1);
}

// ---- host side ----------------------------------------------------------------------------------------

inline int64_t ceil_div_h(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Every launch goes through here (the CPU emulation runs the same kernels on the host).
#if !defined(SPECCAS_EMULATE)
template <typename... P, typename... A>
inline void launch(void (*kernel)(P...), int64_t blocks, int threads, cudaStream_t stream, A... args) {
  kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}
#endif

// A split of V into chunks (each a multiple of 4 entries, at least `min_chunk` unless V is smaller) with about
// `target_blocks` blocks over `positions` positions: many chunks when positions are few, as FlashInfer does for
// small batches, one per position when they are many.
struct Split {
  int64_t csz;
  int64_t nch;
};

inline Split plan_split(int64_t positions, int64_t V, int64_t target_blocks, int64_t min_chunk) {
#if defined(SPECCAS_EMULATE)
  min_chunk = emu_min_chunk(min_chunk);  // small chunks, so small vocabularies still merge many
#endif
  const int64_t most = ceil_div_h(V, min_chunk);
  int64_t nch = ceil_div_h(target_blocks, positions > 0 ? positions : 1);
  nch = nch < 1 ? 1 : (nch > most ? most : nch);
  const int64_t csz = ceil_div_h(ceil_div_h(V, nch), 4) * 4;
  return Split{csz, ceil_div_h(V, csz)};
}

// The ticket counters: uint32, zero at rest (each kernel's last user resets the ones it used), persistent per
// device and stream and zeroed once, when created or grown. Concurrent streams get their own. A graph being
// captured gets counters of its own (kept alive for the life of the process, a few kilobytes per capture),
// zeroed by one memset node of that graph, so replays never share counters with eager calls.
inline unsigned* ticket_counters(int64_t count, const at::Device& device, cudaStream_t stream) {
  static std::mutex mu;
  static std::map<std::pair<int, cudaStream_t>, at::Tensor> cache;
  static std::vector<at::Tensor> captured;
  const auto opts = at::TensorOptions().device(device).dtype(at::kInt);
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  std::lock_guard<std::mutex> lock(mu);
  if (status != cudaStreamCaptureStatusNone) {
    at::Tensor t = at::empty({count}, opts);
    C10_CUDA_CHECK(cudaMemsetAsync(t.data_ptr(), 0, static_cast<size_t>(count) * sizeof(int), stream));
    captured.push_back(t);
    return reinterpret_cast<unsigned*>(t.data_ptr());
  }
  at::Tensor& t = cache[{static_cast<int>(device.index()), stream}];
  if (!t.defined() || t.numel() < count) {
    const int64_t grown = t.defined() ? 2 * t.numel() : 0;
    t = at::zeros({count > grown ? count : grown}, opts);  // on the current stream: before the kernels
  }
  return reinterpret_cast<unsigned*>(t.data_ptr());
}

// Per-call scratch (no zeroing needed: every element read is written first in the same call), carved from one
// allocation of the caching allocator (no device work). Run the same carving twice: first on a Carver without
// memory (it measures), then on one over the allocation.
class Carver {
 public:
  explicit Carver(char* base) : base_(base) {}
  template <typename T>
  T* take(int64_t count) {
    T* p = base_ == nullptr ? nullptr : reinterpret_cast<T*>(base_ + used_);
    used_ += (count * static_cast<int64_t>(sizeof(T)) + 15) / 16 * 16;
    return p;
  }
  int64_t used() const { return used_; }

 private:
  char* base_;
  int64_t used_ = 0;
};

template <typename F>
at::Tensor carve_scratch(const at::Device& device, F&& carve) {
  Carver measure(nullptr);
  carve(measure);
  at::Tensor buf = at::empty({measure.used() > 0 ? measure.used() : 16},
                             at::TensorOptions().device(device).dtype(at::kByte));
  Carver real(static_cast<char*>(buf.data_ptr()));
  carve(real);
  return buf;
}

}  // namespace cuda
}  // namespace speccas
