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
// The cutoff is the largest of the three (each keeps an upper set). `position_cutoff` runs it with one block of
// NT threads over one position whose max is known, a pass over the row per radix level (from L2: the row was
// just read for its max): levels = ceil(significant bits / 11): 2 for bf16/fp16, 3 for fp32, 6 for fp64, per
// filter. No launch of its own: verify_cuda.cu runs it in the stats launch (the last chunk block of a
// position), sample_cuda.cu in its one-block-per-row filtered race. Rows with every filter off, T = 0 (greedy
// ignores the filters) or an invalid parameter keep everything (cut = -inf).
#pragma once

#include "cuda_common.cuh"

namespace speccas {
namespace cuda {

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

// Exclusive prefix sum of one value per thread over the block (NW warps), and the block's total.
template <int NW>
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
  for (int w = 0; w < NW; ++w) {
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
template <typename in_t, typename acc_t, bool kMass, int NT>
__device__ __forceinline__ acc_t radix_cut(const in_t* row, int64_t V, bool vec, acc_t floor, acc_t M,
                                           acc_t inv_t, acc_t scale, double k_or_frac) {
  using K = typename KeyTraits<in_t>::K;
  constexpr int sig = KeyTraits<in_t>::sig;
  __shared__ unsigned long long hist[kBins];
  constexpr int kPer = kBins / NT;  // bins per thread
  static_assert(kBins % NT == 0, "NT must divide the bin count");
  __shared__ unsigned long long s_scan[NT / 32];
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
    for (int d = threadIdx.x; d < kBins; d += NT) hist[d] = 0;
    if (threadIdx.x == 0) s_digit = -1;
    __syncthreads();
    for (int64_t v0 = 4 * static_cast<int64_t>(threadIdx.x); v0 < V; v0 += 4 * NT) {
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
    // Thread t holds bins nb-1-kPer t .. nb-kPer-kPer t (descending logits); the first crossing from the top wins.
    unsigned long long loc[kPer];
    unsigned long long own = 0;
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int j = kPer * threadIdx.x + q;
      loc[q] = j < nb ? hist[nb - 1 - j] : 0ull;
      own += loc[q];
    }
    unsigned long long total = 0;
    const unsigned long long base = above + block_exclusive_scan<NT / 32>(own, s_scan, total);
    if (kMass && pbits == 0) target = k_or_frac * static_cast<double>(total);
    if (static_cast<double>(base) < target && static_cast<double>(base + own) >= target) {
      unsigned long long cum = base;
#pragma unroll
      for (int q = 0; q < kPer; ++q) {
        const unsigned long long before = cum;
        cum += loc[q];
        if (static_cast<double>(before) < target && static_cast<double>(cum) >= target) {
          s_digit = nb - 1 - (kPer * static_cast<int>(threadIdx.x) + q);
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

// One row's filter parameters, read once.
template <typename acc_t>
struct RowFilters {
  acc_t T, top_p, min_p;
  int64_t top_k;
  // checks.filter_rows_ok and a usable temperature.
  __device__ __forceinline__ bool params_ok() const {
    return is_finite(T) && T >= acc_t(0) && top_k >= 0 && top_p > acc_t(0) && top_p <= acc_t(1) &&
           min_p >= acc_t(0) && min_p <= acc_t(1);
  }
  // Some filter removes entries of a V-entry row (never at T = 0: greedy ignores the filters).
  __device__ __forceinline__ bool cuts(int64_t V) const {
    return params_ok() && T > acc_t(0) && ((top_k >= 1 && top_k < V) || top_p < acc_t(1) || min_p > acc_t(0));
  }
};

// The cutoff of one row (V entries) whose max M is finite and whose filters cut (RowFilters::cuts), by the whole
// block of NT threads; every thread gets it.
template <typename in_t, typename acc_t, int NT>
__device__ __forceinline__ acc_t position_cutoff(const in_t* row, int64_t V, acc_t M, RowFilters<acc_t> f) {
  __shared__ acc_t sh_c[NT / 32];
  const bool vec = vec_aligned(row);
  const acc_t inv_t = inv_temperature(f.T);
  const int64_t k = f.top_k;
  acc_t c = neg_inf<acc_t>();
  if (k >= 1 && k < V) {
    c = k == 1 ? M : radix_cut<in_t, acc_t, false, NT>(row, V, vec, neg_inf<acc_t>(), M, inv_t, acc_t(0),
                                                        static_cast<double>(k));
  }
  if (f.top_p < acc_t(1)) {
    const int lg = 64 - __clzll(static_cast<long long>(V));  // bits of V: sums of V masses <= 1 fit below 2**61
    const acc_t scale = static_cast<acc_t>(exp2f(static_cast<float>(61 - lg)));
    const acc_t cp =
        radix_cut<in_t, acc_t, true, NT>(row, V, vec, c, M, inv_t, scale, static_cast<double>(f.top_p));
    c = cp > c ? cp : c;
  }
  if (f.min_p > acc_t(0)) {
    acc_t lowest = static_cast<acc_t>(INFINITY);
    for (int64_t v0 = 4 * static_cast<int64_t>(threadIdx.x); v0 < V; v0 += 4 * NT) {
      const Group4<in_t, acc_t> g = load4<in_t, acc_t>(row, v0, V, vec);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const acc_t x = g.get(j);
        if (v0 + j < V && x < lowest && dexp(mul_rn(x - M, inv_t)) >= f.min_p) lowest = x;
      }
    }
    const acc_t cm = block_min<acc_t, NT / 32>(lowest, sh_c);
    c = cm > c ? cm : c;
  }
  return c;
}

}  // namespace cuda
}  // namespace speccas
