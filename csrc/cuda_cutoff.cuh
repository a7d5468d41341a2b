// The sampling filters of SPEC.md section 2 on CUDA, as one logit cutoff per position (keep z >= cut), found
// without a sort, exactly as reference.filter_keep keeps entries:
//
//   top-k   the k-th largest logit (ties kept): a radix select over the order-preserving bit pattern of the
//           logits, 11 bits a level: the first key from the top at which the count of entries >= it reaches k.
//   top-p   over the top-k entries, the smallest value d whose entries >= d hold at least top_p of their mass
//           (an entry is kept iff the mass strictly above it is below top_p * total): the same radix walk on
//           masses e = exp((z - M) * (1/T)) in 64-bit fixed point (exact, order-free sums, so the cutoff does
//           not depend on the order in which threads add; 2**-(61 - log2 V) resolution).
//   min-p   the smallest logit whose e >= min_p (e is monotone in z).
//
// The cutoff is the largest of the three (each keeps an upper set). One block per position, a pass over the
// row per radix level (from L2 after the first): levels = ceil(significant bits / 11): 2 for bf16/fp16, 3 for
// fp32, 6 for fp64, per filter. Used by verify_cuda.cu and sample_cuda.cu as one extra launch when a filter
// is on (`_filter_cutoff_kernel`); rows with every filter off, T = 0 (greedy ignores the filters) or an
// invalid parameter get cut = -inf.
#pragma once

#include "cuda_common.cuh"

namespace speccas {
namespace cuda {

constexpr int kCutThreads = 512;
constexpr int kCutWarps = kCutThreads / 32;
constexpr int kDigitBits = 11;
constexpr int kBins = 1 << kDigitBits;

// The key of a logit: its `sig` significant bits (the input dtype's, read from the compute type's pattern) in
// an order-preserving unsigned form (negative values bit-flipped, non-negative ones with the top bit set).
template <typename in_t>
struct KeyTraits;
template <>
struct KeyTraits<float> {
  using K = uint32_t;
  static constexpr int sig = 32;
};
template <>
struct KeyTraits<c10::Half> {  // sign, 8 exponent and the top 10 mantissa bits of the float pattern
  using K = uint32_t;
  static constexpr int sig = 19;
};
template <>
struct KeyTraits<c10::BFloat16> {
  using K = uint32_t;
  static constexpr int sig = 16;
};
template <>
struct KeyTraits<double> {
  using K = uint64_t;
  static constexpr int sig = 64;
};

__device__ __forceinline__ uint32_t bits_of(float x) { return __float_as_uint(x); }
__device__ __forceinline__ uint64_t bits_of(double x) { return static_cast<uint64_t>(__double_as_longlong(x)); }
__device__ __forceinline__ float from_bits(uint32_t b, float) { return __uint_as_float(b); }
__device__ __forceinline__ double from_bits(uint64_t b, double) { return __longlong_as_double(static_cast<long long>(b)); }

template <typename in_t, typename acc_t>
__device__ __forceinline__ typename KeyTraits<in_t>::K to_key(acc_t x) {
  using K = typename KeyTraits<in_t>::K;
  constexpr int kb = 8 * sizeof(K), sig = KeyTraits<in_t>::sig;
  constexpr K top_bit = K(1) << (sig - 1);
  constexpr K mask = sig == kb ? ~K(0) : ((K(1) << (sig % kb)) - 1);
  K bits = bits_of(x);
  if (bits == (K(1) << (kb - 1))) bits = 0;  // -0 is +0: the two compare equal
  const K top = bits >> (kb - sig);
  return (top & top_bit) ? (~top & mask) : (top | top_bit);
}

template <typename in_t, typename acc_t>
__device__ __forceinline__ acc_t from_key(typename KeyTraits<in_t>::K key) {
  using K = typename KeyTraits<in_t>::K;
  constexpr int kb = 8 * sizeof(K), sig = KeyTraits<in_t>::sig;
  constexpr K top_bit = K(1) << (sig - 1);
  constexpr K mask = sig == kb ? ~K(0) : ((K(1) << (sig % kb)) - 1);
  const K top = (key & top_bit) ? (key & ~top_bit) : (~key & mask);
  return from_bits(static_cast<K>(top << (kb - sig)), acc_t(0));
}

__device__ __forceinline__ unsigned long long to_fixed(float e, float scale) { return __float2ull_rn(e * scale); }
__device__ __forceinline__ unsigned long long to_fixed(double e, double scale) { return __double2ull_rn(e * scale); }

// Exclusive prefix sum of one value per thread over the block (kCutThreads), and the block's total.
__device__ __forceinline__ unsigned long long block_exclusive_scan(unsigned long long v, unsigned long long* sh,
                                                                   unsigned long long& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  unsigned long long incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long u = __shfl_up_sync(kFull, incl, o);
    if (lane >= o) incl += u;
  }
  __syncthreads();
  if (lane == 31) sh[warp] = incl;
  __syncthreads();
  unsigned long long before = 0, all = 0;
#pragma unroll
  for (int w = 0; w < kCutWarps; ++w) {
    const unsigned long long t = sh[w];
    before += w < warp ? t : 0ull;
    all += t;
  }
  total = all;
  return before + incl - v;
}

// The largest logit value t such that the weight of the row's entries with z >= t (among those >= floor)
// reaches the target: weights 1 and target k (top-k), or fixed-point masses and target frac * total (top-p).
// Falls back to `floor` (nothing more removed) if rounding ever left no level crossing the target.
template <typename in_t, typename acc_t, bool kMass>
__device__ acc_t radix_cut(const in_t* row, int64_t V, bool vec, acc_t floor, acc_t M, acc_t inv_t, acc_t scale,
                           double k_or_frac) {
  using K = typename KeyTraits<in_t>::K;
  constexpr int sig = KeyTraits<in_t>::sig;
  __shared__ unsigned long long hist[kBins];
  __shared__ unsigned long long s_scan[kCutWarps];
  __shared__ unsigned long long s_above;
  __shared__ int s_digit;
  K prefix = 0;
  int pbits = 0;
  unsigned long long above = 0;
  double target = kMass ? 0.0 : k_or_frac;
  while (pbits < sig) {
    const int width = sig - pbits < kDigitBits ? sig - pbits : kDigitBits;
    const int shift = sig - pbits - width;
    const int nb = 1 << width;
    for (int d = threadIdx.x; d < kBins; d += kCutThreads) hist[d] = 0;
    if (threadIdx.x == 0) s_digit = -1;
    __syncthreads();
    for (int64_t v0 = 4 * static_cast<int64_t>(threadIdx.x); v0 < V; v0 += 4 * kCutThreads) {
      const Group4<in_t, acc_t> g = load4<in_t, acc_t>(row, v0, V, vec);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const acc_t x = g.get(j);
        if (v0 + j >= V || !(x >= floor)) continue;
        const K key = to_key<in_t, acc_t>(x);
        if (pbits > 0 && (key >> (sig - pbits)) != prefix) continue;
        const int d = static_cast<int>((key >> shift) & static_cast<K>(nb - 1));
        const unsigned long long w = kMass ? to_fixed(dexp(mul_rn(x - M, inv_t)), scale) : 1ull;
        if (w != 0) atomicAdd(&hist[d], w);
      }
    }
    __syncthreads();
    // Thread t holds bins nb-1-4t .. nb-4-4t (descending logits); the first crossing from the top wins.
    unsigned long long loc[4];
    unsigned long long own = 0;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int j = 4 * threadIdx.x + q;
      loc[q] = j < nb ? hist[nb - 1 - j] : 0ull;
      own += loc[q];
    }
    unsigned long long total = 0;
    const unsigned long long base = above + block_exclusive_scan(own, s_scan, total);
    if (kMass && pbits == 0) target = k_or_frac * static_cast<double>(total);
    if (static_cast<double>(base) < target && static_cast<double>(base + own) >= target) {
      unsigned long long cum = base;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const unsigned long long before = cum;
        cum += loc[q];
        if (static_cast<double>(before) < target && static_cast<double>(cum) >= target) {
          s_digit = nb - 1 - (4 * static_cast<int>(threadIdx.x) + q);
          s_above = before;
        }
      }
    }
    __syncthreads();
    const int digit = s_digit;
    if (digit < 0) return floor;  // block-uniform
    above = s_above;
    prefix = static_cast<K>((pbits > 0 ? (prefix << width) : K(0)) | static_cast<K>(digit));
    pbits += width;
    __syncthreads();  // hist, s_digit and s_above are rewritten by the next level
  }
  return from_key<in_t, acc_t>(prefix);
}

// The filters' per-row values, and the vocabulary size.
template <typename acc_t>
struct CutArgs {
  RowArg<acc_t> T, top_p, min_p;
  RowArg<int64_t> top_k;
  int64_t V;
};

// `Rows` locates position p: `bool locate(int64_t p, const in_t*& row, int64_t& b) const` (false: the
// position is not read). Writes cut[p] (-inf: keep everything) and, when row_max is given, the max logit.
template <typename in_t, typename acc_t, typename Rows>
__global__ void __launch_bounds__(kCutThreads) _filter_cutoff_kernel(acc_t* __restrict__ cut,      // [P]
                                                                     acc_t* __restrict__ row_max,  // [P] or null
                                                                     Rows rows, CutArgs<acc_t> a) {
  __shared__ acc_t sh_v[kCutWarps];
  const int64_t p = blockIdx.x;
  const int64_t V = a.V;
  const in_t* row = nullptr;
  int64_t b = 0;
  const bool used = rows.locate(p, row, b);
  const acc_t T = used ? a.T.at(b) : acc_t(0);
  const int64_t k = used ? a.top_k.at(b) : 0;
  const acc_t tp = used ? a.top_p.at(b) : acc_t(1), mp = used ? a.min_p.at(b) : acc_t(0);
  const bool params_ok = is_finite(T) && T > acc_t(0) && k >= 0 && tp > acc_t(0) && tp <= acc_t(1) &&
                         mp >= acc_t(0) && mp <= acc_t(1);
  const bool k_on = k >= 1 && k < V, p_on = tp < acc_t(1), m_on = mp > acc_t(0);
  const bool want_cut = used && params_ok && (k_on || p_on || m_on);
  if (!used || (!want_cut && row_max == nullptr)) {
    if (threadIdx.x == 0) {
      cut[p] = neg_inf<acc_t>();
      if (row_max != nullptr) row_max[p] = neg_inf<acc_t>();
    }
    return;
  }
  const bool vec = vec_aligned(row);
  acc_t M = neg_inf<acc_t>();
  int bad = 0;
  constexpr int U = kGroupsInFlight<in_t>;
  constexpr int64_t step = 4 * kCutThreads;
  for (int64_t v0 = 4 * static_cast<int64_t>(threadIdx.x); v0 < V; v0 += U * step) {
    Group4<in_t, acc_t> g[U];
#pragma unroll
    for (int u = 0; u < U; ++u) g[u] = load4<in_t, acc_t>(row, v0 + u * step, V, vec);
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const acc_t x = g[u].get(j);  // -inf beyond V
        M = x > M ? x : M;
        bad |= (x != x) | (x == static_cast<acc_t>(INFINITY));
      }
    }
  }
  M = block_max<acc_t, kCutWarps>(M, sh_v);
  bad = __syncthreads_or(bad);
  if (threadIdx.x == 0 && row_max != nullptr) row_max[p] = M;
  if (!want_cut || bad || M == neg_inf<acc_t>()) {
    if (threadIdx.x == 0) cut[p] = neg_inf<acc_t>();
    return;
  }
  const acc_t inv_t = inv_temperature(T);
  acc_t c = neg_inf<acc_t>();
  if (k_on) c = k == 1 ? M : radix_cut<in_t, acc_t, false>(row, V, vec, neg_inf<acc_t>(), M, inv_t, acc_t(0),
                                                           static_cast<double>(k));
  if (p_on) {
    int lg = 64 - __clzll(static_cast<long long>(V));  // bits of V: sums of V masses <= 1 fit below 2**61
    const acc_t scale = static_cast<acc_t>(exp2f(static_cast<float>(61 - lg)));
    const acc_t cp = radix_cut<in_t, acc_t, true>(row, V, vec, c, M, inv_t, scale, static_cast<double>(tp));
    c = cp > c ? cp : c;
  }
  if (m_on) {
    acc_t lowest = static_cast<acc_t>(INFINITY);
    for (int64_t v0 = 4 * static_cast<int64_t>(threadIdx.x); v0 < V; v0 += 4 * kCutThreads) {
      const Group4<in_t, acc_t> g = load4<in_t, acc_t>(row, v0, V, vec);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const acc_t x = g.get(j);
        if (v0 + j < V && x < lowest && dexp(mul_rn(x - M, inv_t)) >= mp) lowest = x;
      }
    }
    const acc_t cm = block_min<acc_t, kCutWarps>(lowest, sh_v);
    c = cm > c ? cm : c;
  }
  if (threadIdx.x == 0) cut[p] = c;
}

}  // namespace cuda
}  // namespace speccas
