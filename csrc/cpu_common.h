// Building blocks of the CPU ops (verify_cpu.cpp, sample_cpu.cpp): streaming statistics over a
// vocabulary chunk, probabilities, Gumbel noise and first-index argmax over blocks.
//
// Work is split into (position, vocabulary chunk) tasks: one chunk per position when there are
// many positions, several when rows are few (FlashInfer's split-vocabulary idea), so that
// at::parallel_for keeps every thread busy. Inside a chunk the loops run over blocks of kBlock
// elements (converted to float first for bf16/fp16 logits) with `#pragma omp simd`, so GCC/Clang
// vectorize the exp/log/Philox arithmetic (philox.h) without ATen's vectorization headers.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <type_traits>

#include "philox.h"
#include "stats_math.h"

namespace speccas {
namespace cpu {

constexpr int64_t kBlock = 1024;  // a multiple of 4 (one Philox call covers 4 vocabulary entries)

// always_inline: an out-of-line call inside a `#pragma omp simd` loop stops its vectorization.
#define SPECCAS_INLINE inline __attribute__((always_inline))
SPECCAS_INLINE float sc_exp(float x) { return sc_expf(x); }
SPECCAS_INLINE double sc_exp(double x) { return std::exp(x); }
SPECCAS_INLINE float sc_log(float x) { return sc_logf(x); }
SPECCAS_INLINE double sc_log(double x) { return std::log(x); }

template <typename T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Per-thread scratch buffers for one block.
template <typename acc_t>
struct Scratch {
  alignas(64) acc_t z0[kBlock];
  alignas(64) acc_t z1[kBlock];
  alignas(64) acc_t z2[kBlock];
  alignas(64) acc_t q[kBlock];
  alignas(64) acc_t p[kBlock];
  alignas(64) acc_t pa[kBlock];
  alignas(64) acc_t s[kBlock];
  alignas(64) acc_t pi[kBlock];
  alignas(64) acc_t fs[kBlock];
  alignas(64) char in_a[kBlock];
  alignas(64) float g[kBlock];
  alignas(64) uint32_t bits[kBlock];
};

// Logits of one block as acc_t: the input itself for float32/float64, a converted copy otherwise.
template <typename in_t, typename acc_t>
inline const acc_t* load_block(const in_t* src, int64_t n, acc_t* buf) {
  if constexpr (std::is_same_v<in_t, acc_t>) {
    return src;
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<acc_t>(static_cast<float>(src[i]));
    return buf;
  }
}

// How to split V for `items` independent positions.
struct Plan {
  int64_t nch;  // chunks per position
  int64_t csz;  // chunk size, a multiple of 64
};

inline Plan plan_chunks(int64_t items, int64_t V, int64_t min_chunk = 8192) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t nch = 1;
  if (items < 2 * threads) {
    nch = std::min(ceil_div(4 * threads, std::max<int64_t>(items, 1)), ceil_div(V, min_chunk));
    nch = std::max<int64_t>(nch, 1);
  }
  int64_t csz = ceil_div(ceil_div(V, nch), 64) * 64;
  return Plan{ceil_div(V, csz), csz};
}

// at::parallel_for over `ntasks` tasks of about `elems` vocabulary entries each, with a grain that
// keeps small (decode-sized) problems on the calling thread: waking a thread pool costs more than
// a few thousand exps.
template <typename F>
inline void parallel_tasks(int64_t ntasks, int64_t elems, const F& fn) {
  constexpr int64_t kMinParallelElems = 1 << 15;
  const int64_t grain = std::max<int64_t>(1, kMinParallelElems / std::max<int64_t>(elems, 1));
  at::parallel_for(0, ntasks, grain, fn);
}

// Statistics of logits z[lo:hi] (SPEC.md section 2): the max, sum exp(z - max) (T = 1) and
// sum exp((z - max) / T), the first index of the max, and whether a NaN or +inf was seen.
template <typename acc_t>
struct ChunkStats {
  acc_t max = neg_inf<acc_t>();
  double s1 = 0.0;
  double sT = 0.0;
  int64_t amax = -1;
  int bad = 0;
};

template <typename in_t, typename acc_t>
ChunkStats<acc_t> stats_chunk(const in_t* z, int64_t lo, int64_t hi, acc_t T, bool sums, bool argmax,
                              acc_t* buf) {
  ChunkStats<acc_t> st;
  const acc_t inf = std::numeric_limits<acc_t>::infinity();
  acc_t m = neg_inf<acc_t>();
  int bad = 0;
  for (int64_t v0 = lo; v0 < hi; v0 += kBlock) {
    const int64_t n = std::min(kBlock, hi - v0);
    const acc_t* x = load_block(z + v0, n, buf);
    acc_t mb = neg_inf<acc_t>();
    int bb = 0;
#pragma omp simd reduction(max : mb) reduction(| : bb)
    for (int64_t i = 0; i < n; ++i) {
      const acc_t v = x[i];
      mb = v > mb ? v : mb;
      bb |= static_cast<int>(v != v) | static_cast<int>(v == inf);
    }
    m = std::max(m, mb);
    bad |= bb;
  }
  st.max = m;
  st.bad = bad;
  if (bad || m == neg_inf<acc_t>() || (!sums && !argmax)) return st;
  const bool scaled = sums && T > acc_t(0) && T != acc_t(1);
  double s1 = 0.0, sT = 0.0;
  for (int64_t v0 = lo; v0 < hi; v0 += kBlock) {
    const int64_t n = std::min(kBlock, hi - v0);
    const acc_t* x = load_block(z + v0, n, buf);
    if (sums) {
      acc_t b1 = 0;
#pragma omp simd reduction(+ : b1)
      for (int64_t i = 0; i < n; ++i) b1 += sc_exp(x[i] - m);
      s1 += static_cast<double>(b1);
      if (scaled) {
        acc_t bT = 0;
#pragma omp simd reduction(+ : bT)
        for (int64_t i = 0; i < n; ++i) bT += sc_exp((x[i] - m) / T);
        sT += static_cast<double>(bT);
      }
    }
    if (argmax && st.amax < 0) {
      for (int64_t i = 0; i < n; ++i) {
        if (x[i] == m) {
          st.amax = v0 + i;
          break;
        }
      }
    }
  }
  st.s1 = s1;
  st.sT = scaled ? sT : s1;
  return st;
}

// The merged statistics of one position. bad: NaN, +inf, or all -inf (SPEC.md section 4).
template <typename acc_t>
struct PosStats {
  acc_t M = 0, S1 = 1, ST = 1;
  int64_t amax = 0;
  bool bad = false;
};

template <typename acc_t>
PosStats<acc_t> merge_stats(const ChunkStats<acc_t>* c, int64_t nch, acc_t T) {
  PosStats<acc_t> out;
  merge_chunk_stats(c, nch, T, out);  // stats_math.h, shared with the CUDA build
  return out;
}

// Sampling probabilities of a block: softmax(z / T) from merged statistics, one-hot at the
// first argmax when T = 0 (reference._distributions). T = 1 also gives the unscaled q^, p^.
template <typename acc_t>
inline void probs_block(const acc_t* z, int64_t n, int64_t v0, const PosStats<acc_t>& st, acc_t T, acc_t* out) {
  const acc_t M = st.M;
  if (T == acc_t(0)) {
    const int64_t a = st.amax;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = (v0 + i == a) ? acc_t(1) : acc_t(0);
  } else if (T == acc_t(1)) {
    const acc_t S = st.ST;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = sc_exp(z[i] - M) / S;
  } else {
    const acc_t S = st.ST;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = sc_exp((z[i] - M) / T) / S;
  }
}

// The unscaled probability q^(v) = exp(z - M) / S1.
template <typename acc_t>
inline void unscaled_block(const acc_t* z, int64_t n, const PosStats<acc_t>& st, acc_t* out) {
  const acc_t M = st.M, S = st.S1;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = sc_exp(z[i] - M) / S;
}

// One sampling probability, the scalar form of probs_block.
template <typename acc_t>
inline acc_t prob_at(acc_t z, int64_t v, const PosStats<acc_t>& st, acc_t T) {
  if (T == acc_t(0)) return v == st.amax ? acc_t(1) : acc_t(0);
  if (T == acc_t(1)) return sc_exp(z - st.M) / st.ST;
  return sc_exp((z - st.M) / T) / st.ST;
}

// Gumbel noise for vocabulary entries v0 .. v0 + n - 1 (v0 a multiple of 4, n <= kBlock).
inline void gumbel_block(int64_t seed, int64_t pos, uint32_t stream, int64_t v0, int64_t n, float* g,
                         uint32_t* bits) {
  const int64_t ng = (n + 3) >> 2, g0 = v0 >> 2;
#pragma omp simd
  for (int64_t j = 0; j < ng; ++j) {
    const Philox4 r = philox_group(seed, pos, stream, g0 + j);
    bits[4 * j + 0] = r.w[0];
    bits[4 * j + 1] = r.w[1];
    bits[4 * j + 2] = r.w[2];
    bits[4 * j + 3] = r.w[3];
  }
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) g[i] = bits_to_gumbel(bits[i]);
}

// A running first-index argmax.
template <typename acc_t>
struct Race {
  acc_t best = neg_inf<acc_t>();
  int64_t idx = -1;
  double mass = 0.0;  // residual races: sum of the weights w over the chunk
  int bad = 0;      // sample: NaN or +inf seen
};

template <typename acc_t>
inline void race_block(const acc_t* s, int64_t n, int64_t v0, Race<acc_t>& r) {
  acc_t mb = neg_inf<acc_t>();
#pragma omp simd reduction(max : mb)
  for (int64_t i = 0; i < n; ++i) mb = s[i] > mb ? s[i] : mb;
  if (r.idx < 0 || mb > r.best) {
    int64_t at = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (s[i] == mb) {
        at = i;
        break;
      }
    }
    r.best = mb;
    r.idx = v0 + at;
  }
}

// Merge chunk results in vocabulary order (ties keep the earlier chunk: the lowest index).
template <typename acc_t>
inline void merge_into(Race<acc_t>& out, const Race<acc_t>& c) {
  out.mass += c.mass;
  out.bad |= c.bad;
  if (c.idx >= 0 && (out.idx < 0 || c.best > out.best)) {
    out.best = c.best;
    out.idx = c.idx;
  }
}

template <typename acc_t>
inline Race<acc_t> merge_races(const Race<acc_t>* c, int64_t nch) {
  Race<acc_t> out;
  for (int64_t k = 0; k < nch; ++k) merge_into(out, c[k]);
  return out;
}

// A residual race and its fallback, the race over pi itself (used when the residual is all zero).
template <typename acc_t>
struct RacePair {
  Race<acc_t> main, fallback;
};

template <typename acc_t>
inline RacePair<acc_t> merge_races(const RacePair<acc_t>* c, int64_t nch) {
  RacePair<acc_t> out;
  for (int64_t k = 0; k < nch; ++k) {
    merge_into(out.main, c[k].main);
    merge_into(out.fallback, c[k].fallback);
  }
  return out;
}

}  // namespace cpu
}  // namespace speccas
