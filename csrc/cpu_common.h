// Building blocks of the CPU ops (verify_cpu.cpp, sample_cpu.cpp): per-row parameters, streaming
// statistics over a vocabulary chunk, the sampling filters' cutoff, probabilities, Gumbel noise and
// first-index argmax races over blocks.
//
// Work is split into (position, vocabulary chunk) tasks: one chunk per position when there are
// many positions, several when rows are few (FlashInfer's split-vocabulary idea), so that
// at::parallel_for keeps every thread busy. Inside a chunk the loops run over blocks of kBlock
// elements (converted to float first for bf16/fp16 logits) with `#pragma omp simd`, so GCC/Clang
// vectorize the exp/log/Philox arithmetic (philox.h) without ATen's vectorization headers. The
// filters' cutoff needs a whole position (a selection, a partial sort): one task per position.
//
// Every distribution is written as reference.py computes it, in the compute dtype acc_t: scaled
// logits s = (z - M) * inv_t with inv_t = inv_temperature(T), e = exp(s), the sampling probability
// e / ST over the kept entries {z >= cut} (one-hot at the argmax at T = 0), the unscaled q^ = exp(z - M) / S1.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "philox.h"
#include "speccas.h"
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

// int64 arithmetic that wraps around like torch's (the ragged layout's offsets come from the caller unchecked).
inline int64_t wrap_add(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
}
inline int64_t wrap_sub(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint64_t>(a) - static_cast<uint64_t>(b));
}
inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return std::min(std::max(v, lo), hi); }

// reference.inv_temperature: 1/T rounded in acc_t, at most its largest finite value; 1 for T = 0 or a bad T.
template <typename acc_t>
inline acc_t inv_temperature(acc_t T) {
  const bool ok = T > acc_t(0) && (T - T) == acc_t(0);
  const acc_t inv = acc_t(1) / (ok ? T : acc_t(1));
  return std::min(inv, std::numeric_limits<acc_t>::max());
}

// A per-row parameter (speccas.h RowParam) read on the host: row b's value in acc_t (a scalar is rounded
// to acc_t as checks.as_rows does), and exact(b), the value as given (filter_rows_ok checks it unrounded).
template <typename T>
struct Rows {
  const T* p = nullptr;
  T v{};
  double raw = 0.0;
  T operator[](int64_t b) const { return p ? p[b] : v; }
  double exact(int64_t b) const { return p ? static_cast<double>(p[b]) : raw; }
};

template <typename T, typename V>
Rows<T> rows_of(const RowParam<V>& r) {
  Rows<T> out;
  out.v = static_cast<T>(r.v);
  out.raw = static_cast<double>(r.v);
  if (r.per_row()) out.p = r.t.template data_ptr<T>();
  return out;
}

// The sampling filters of one row (SPEC.md section 2), off values top_k 0, top_p 1, min_p 0.
template <typename acc_t>
struct RowFilter {
  int64_t top_k = 0;
  acc_t top_p = 1, min_p = 0;
  bool on = false;  // some filter keeps fewer than V entries
};

// The filters' row parameters; ok(b): checks.filter_rows_ok (top_k >= 0, top_p in (0, 1], min_p in [0, 1]).
template <typename acc_t>
struct FilterRows {
  Rows<int64_t> top_k;
  Rows<acc_t> top_p, min_p;
  bool any = false;  // speccas.h's `filters`: false means every row is off

  bool ok(int64_t b) const {
    if (!any) return true;
    const double tp = top_p.exact(b), mp = min_p.exact(b);
    return top_k[b] >= 0 && tp > 0.0 && tp <= 1.0 && mp >= 0.0 && mp <= 1.0;
  }
  RowFilter<acc_t> at(int64_t b, int64_t V) const {
    RowFilter<acc_t> f;
    if (!any) return f;
    f.top_k = top_k[b];
    f.top_p = top_p[b];
    f.min_p = min_p[b];
    f.on = (f.top_k >= 1 && f.top_k < V) || f.top_p < acc_t(1) || f.min_p > acc_t(0);
    return f;
  }
};

template <typename acc_t, typename In>
FilterRows<acc_t> filter_rows(const In& in) {
  return FilterRows<acc_t>{rows_of<int64_t>(in.top_k), rows_of<acc_t>(in.top_p), rows_of<acc_t>(in.min_p), in.filters};
}

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

// Run fn(job, lo, hi, scratch) over (job, vocabulary chunk) tasks in parallel. Returns the chunk results
// [jobs x chunks], each job's chunks in vocabulary order, and the number of chunks per job.
template <typename acc_t, typename Part, typename Job, typename F>
std::pair<std::vector<Part>, int64_t> map_chunks(const std::vector<Job>& jobs, int64_t V, int64_t min_chunk,
                                                 const F& fn) {
  const int64_t nj = static_cast<int64_t>(jobs.size());
  const Plan pl = plan_chunks(nj, V, min_chunk);
  std::vector<Part> part(nj * pl.nch);
  parallel_tasks(nj * pl.nch, pl.csz, [&](int64_t t0, int64_t t1) {
    std::unique_ptr<Scratch<acc_t>> sc(new Scratch<acc_t>);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j = t / pl.nch, c = t % pl.nch;
      const int64_t lo = c * pl.csz, hi = std::min(V, lo + pl.csz);
      if (lo < hi) part[t] = fn(jobs[j], lo, hi, *sc);
    }
  });
  return {std::move(part), pl.nch};
}

// ------------------------------------------------------------------------------------------------ stats

// Statistics of logits z[lo:hi] (SPEC.md section 9, "stats"): the max, sum exp(z - max) (T = 1) and
// sum exp((z - max) * inv_t), the first index of the max, and whether a NaN or +inf was seen.
template <typename acc_t>
struct ChunkStats {
  acc_t max = neg_inf<acc_t>();
  double s1 = 0.0;
  double sT = 0.0;
  int64_t amax = -1;
  int bad = 0;
};

// What the stats phase computes at one position: always the max and the flags; s1: sum exp(z - M) (rule
// statistics); sT: sum exp((z - M) * inv_t) (the sampling sum when no filter cuts the position); argmax:
// the first index of the max (T = 0).
template <typename in_t, typename acc_t>
struct StatsJob {
  const in_t* z;
  acc_t inv_t;
  bool s1, sT, argmax;
};

template <typename in_t, typename acc_t>
ChunkStats<acc_t> stats_chunk(const StatsJob<in_t, acc_t>& job, int64_t lo, int64_t hi, acc_t* buf) {
  ChunkStats<acc_t> st;
  const acc_t inf = std::numeric_limits<acc_t>::infinity();
  acc_t m = neg_inf<acc_t>();
  int bad = 0;
  for (int64_t v0 = lo; v0 < hi; v0 += kBlock) {
    const int64_t n = std::min(kBlock, hi - v0);
    const acc_t* x = load_block(job.z + v0, n, buf);
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
  const bool sums = job.s1 || job.sT;
  if (bad || m == neg_inf<acc_t>() || (!sums && !job.argmax)) return st;
  const bool scaled = job.sT && job.inv_t != acc_t(1);
  const acc_t inv = job.inv_t;
  double s1 = 0.0, sT = 0.0;
  for (int64_t v0 = lo; v0 < hi; v0 += kBlock) {
    const int64_t n = std::min(kBlock, hi - v0);
    const acc_t* x = load_block(job.z + v0, n, buf);
    if (sums) {
      acc_t b1 = 0;
#pragma omp simd reduction(+ : b1)
      for (int64_t i = 0; i < n; ++i) b1 += sc_exp(x[i] - m);
      s1 += static_cast<double>(b1);
      if (scaled) {
        acc_t bT = 0;
#pragma omp simd reduction(+ : bT)
        for (int64_t i = 0; i < n; ++i) bT += sc_exp((x[i] - m) * inv);
        sT += static_cast<double>(bT);
      }
    }
    if (job.argmax && st.amax < 0) {
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

// The merged statistics of one position, and how its distributions are read:
//   sampling probability: greedy: one-hot at amax (none when amax < 0); else z >= cut ? exp((z - M) * inv_t) / ST : 0;
//   unscaled q^ (rule statistics): token: one-hot at amax; else exp(z - M) / S1, max q^ = 1 / S1.
// bad: NaN, +inf, or all -inf (SPEC.md section 4).
template <typename acc_t>
struct PosStats {
  acc_t M = 0, S1 = 1, ST = 1, inv_t = 1, cut = neg_inf<acc_t>();
  int64_t amax = 0;
  bool bad = false;
  bool greedy = false;  // T = 0, or a token-only draft
  bool token = false;   // a token-only draft: no logits, q one-hot at the draft (amax; -1 outside [0, V))
};

// q of a token-only draft x (reference._token_distributions): one-hot at x, max q^ = 1.
template <typename acc_t>
PosStats<acc_t> token_stats(int64_t x, int64_t V) {
  PosStats<acc_t> st;
  st.amax = (x >= 0 && x < V) ? x : -1;
  st.greedy = st.token = true;
  return st;
}

// The stats phase over `jobs` (one per position): chunked, merged in vocabulary order.
template <typename in_t, typename acc_t>
std::vector<PosStats<acc_t>> run_stats(const std::vector<StatsJob<in_t, acc_t>>& jobs, int64_t V) {
  std::vector<PosStats<acc_t>> out(jobs.size());
  if (jobs.empty()) return out;
  const auto [part, nch] = map_chunks<acc_t, ChunkStats<acc_t>>(
      jobs, V, 8192, [&](const StatsJob<in_t, acc_t>& job, int64_t lo, int64_t hi, Scratch<acc_t>& sc) {
        return stats_chunk(job, lo, hi, sc.z0);
      });
  for (size_t j = 0; j < jobs.size(); ++j) {
    const StatsJob<in_t, acc_t>& job = jobs[j];
    PosStats<acc_t>& st = out[j];
    merge_chunk_stats(part.data() + j * nch, nch, job.inv_t, job.sT && job.inv_t != acc_t(1), st);  // stats_math.h
    st.inv_t = job.inv_t;
  }
  return out;
}

// ------------------------------------------------------------------------------------------------ filters

// Scratch of the filter phase: whole positions.
template <typename acc_t>
struct FilterScratch {
  struct Entry {
    acc_t z, e;
    int64_t v;
  };
  std::vector<acc_t> z, e;
  std::vector<Entry> cand;
  std::vector<double> hist;
};

// Histogram buckets whose upper sets are value upper sets (radix select): the top kBucketBits bits of an
// order-preserving integer key of the value (x < y implies key(x) <= key(y); -0 sorts just below +0).
constexpr int kBucketBits = 12;
constexpr int64_t kBuckets = int64_t(1) << kBucketBits;

SPECCAS_INLINE uint32_t ordered_bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
SPECCAS_INLINE uint64_t ordered_bits(double x) {
  uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return (b >> 63) ? ~b : (b | (uint64_t(1) << 63));
}
template <typename acc_t>
SPECCAS_INLINE int64_t bucket_of(acc_t x) {
  return static_cast<int64_t>(ordered_bits(x) >> (8 * sizeof(acc_t) - kBucketBits));
}

// Apply fn(x, i) to every logit of a position as acc_t, in blocks.
template <typename in_t, typename acc_t, typename F>
inline void for_each_logit(const in_t* z, int64_t V, acc_t* blk, const F& fn) {
  for (int64_t v0 = 0; v0 < V; v0 += kBlock) {
    const int64_t n = std::min(kBlock, V - v0);
    const acc_t* x = load_block(z + v0, n, blk);
    for (int64_t i = 0; i < n; ++i) fn(x[i], v0 + i);
  }
}

// The k-th largest logit, 1 <= k < V: a histogram finds the bucket that holds it, and only the entries from
// that bucket up are selected among.
template <typename in_t, typename acc_t>
acc_t kth_largest(const in_t* z, int64_t V, int64_t k, FilterScratch<acc_t>& fs, acc_t* blk) {
  fs.hist.assign(kBuckets, 0.0);
  for_each_logit(z, V, blk, [&](acc_t x, int64_t) { fs.hist[bucket_of(x)] += 1.0; });
  int64_t b = kBuckets - 1;
  for (double count = 0.0; b > 0; --b) {
    count += fs.hist[b];
    if (count >= static_cast<double>(k)) break;
  }
  fs.z.clear();
  for_each_logit(z, V, blk, [&](acc_t x, int64_t) {
    if (bucket_of(x) >= b) fs.z.push_back(x);
  });
  std::nth_element(fs.z.begin(), fs.z.begin() + (k - 1), fs.z.end(), std::greater<acc_t>());
  return fs.z[k - 1];
}

// top-p's cutoff over the entries with e = fs.e > 0 (the top-k kept ones), thr = top_p * total: entries sorted
// by (z descending, index), a tie group is kept while the mass of the strictly larger entries is below thr,
// that mass rounded as the reference's float cumsum (torch's CPU cumsum runs a double sum rounded to acc_t;
// the reference subtracts the entry from it). -inf: every entry is kept.
// Only the buckets around the crossing of thr are sorted (one nonempty bucket either side, for the rounding of
// the sums), with the double mass of the buckets above as the running sum's start; if the crossing is not
// among them after all, the entries below are appended and sorted as far as the decision needs.
template <typename in_t, typename acc_t>
acc_t top_p_cut(const in_t* z, int64_t V, acc_t thr, FilterScratch<acc_t>& fs, acc_t* blk) {
  const acc_t* e = fs.e.data();
  fs.hist.assign(kBuckets, 0.0);
  for (int64_t v = 0; v < V; ++v) {
    if (e[v] > acc_t(0)) fs.hist[bucket_of(e[v])] += static_cast<double>(e[v]);
  }
  const double t = static_cast<double>(thr);
  int64_t j = kBuckets - 1;
  double base = 0.0;  // the mass of the buckets above j
  for (; j >= 0 && base + fs.hist[j] < t; --j) base += fs.hist[j];
  if (j < 0) return neg_inf<acc_t>();  // the whole mass stays below thr
  int64_t hi = j, lo = j;
  for (int64_t b = j + 1; b < kBuckets; ++b) {
    if (fs.hist[b] > 0.0) {
      hi = b;
      base -= fs.hist[b];
      break;
    }
  }
  for (int64_t b = j - 1; b >= 0; --b) {
    if (fs.hist[b] > 0.0) {
      lo = b;
      break;
    }
  }
  auto& c = fs.cand;
  c.clear();
  acc_t z_above = std::numeric_limits<acc_t>::infinity();  // the smallest logit above the sorted buckets
  for_each_logit(z, V, blk, [&](acc_t x, int64_t v) {
    if (!(e[v] > acc_t(0))) return;
    const int64_t b = bucket_of(e[v]);
    if (b > hi) {
      z_above = std::min(z_above, x);
    } else if (b >= lo) {
      c.push_back({x, e[v], v});
    }
  });
  auto before = [](const typename FilterScratch<acc_t>::Entry& a, const typename FilterScratch<acc_t>::Entry& b) {
    return a.z > b.z || (a.z == b.z && a.v < b.v);
  };
  double run = base;  // the running sum in sorted order, through the entry being read
  size_t done = 0, step = 256;
  bool all = false;  // the entries below the sorted buckets were appended
  for (;;) {
    if (done == c.size()) {
      if (all) break;
      all = true;
      for_each_logit(z, V, blk, [&](acc_t x, int64_t v) {
        if (e[v] > acc_t(0) && bucket_of(e[v]) < lo) c.push_back({x, e[v], v});
      });
      if (done == c.size()) break;
    }
    const size_t m = std::min(c.size(), done + step);
    step *= 8;
    std::nth_element(c.begin() + done, c.begin() + m, c.end(), before);
    std::sort(c.begin() + done, c.begin() + m, before);
    for (size_t i = done; i < m; ++i) {
      run += static_cast<double>(c[i].e);
      if (i > 0 && c[i].z == c[i - 1].z) continue;  // not a tie group's first entry (groups share a bucket)
      const acc_t above = static_cast<acc_t>(run) - c[i].e;  // the mass of the strictly larger entries
      if (!(above < thr)) {
        // Cut below the last kept group (the argmax is kept even if top_p rounds to 0).
        if (i > 0) return c[i - 1].z;
        return base > 0.0 ? z_above : c[0].z;
      }
    }
    done = m;
  }
  return neg_inf<acc_t>();
}

// The filters' cutoff at one position of a valid row at T > 0 (reference.filter_keep): the kept entries are
// {v : z(v) >= cut}, and st.ST becomes the sampling sum over them. st holds the position's M and inv_t.
//   top-k: cut = the k-th largest logit (kth_largest);
//   min-p: the smallest z with e(v) = exp((z - M) * inv_t) >= min_p;
//   top-p: top_p_cut over the top-k kept entries, thr = top_p * total (total: their sum of e). Only the entries
//      with e > 0 are read: entries with e = 0 have probability 0 and never win a race (s <= -103 against a
//      Gumbel draw of at most 17), so whether they are kept changes nothing.
template <typename in_t, typename acc_t>
void filter_position(const in_t* z, int64_t V, const RowFilter<acc_t>& f, PosStats<acc_t>& st,
                     FilterScratch<acc_t>& fs, acc_t* blk) {
  const acc_t M = st.M, inv = st.inv_t;
  acc_t cut = neg_inf<acc_t>();
  if (f.top_k >= 1 && f.top_k < V) cut = kth_largest(z, V, f.top_k, fs, blk);
  // e over the top-k kept entries, their total, and the min-p cutoff.
  const bool min_p = f.min_p > acc_t(0);
  fs.e.resize(V);
  double total = 0.0;
  acc_t cut_m = std::numeric_limits<acc_t>::infinity();
  for (int64_t v0 = 0; v0 < V; v0 += kBlock) {
    const int64_t n = std::min(kBlock, V - v0);
    const acc_t* x = load_block(z + v0, n, blk);
    acc_t* e = fs.e.data() + v0;
    acc_t part = 0;
    acc_t cm = std::numeric_limits<acc_t>::infinity();
    const acc_t ck = cut, mp = f.min_p;
#pragma omp simd reduction(+ : part) reduction(min : cm)
    for (int64_t i = 0; i < n; ++i) {
      const acc_t ei = sc_exp((x[i] - M) * inv);
      const acc_t kept = x[i] >= ck ? ei : acc_t(0);
      e[i] = kept;
      part += kept;
      const acc_t zi = (min_p && kept >= mp) ? x[i] : std::numeric_limits<acc_t>::infinity();
      cm = zi < cm ? zi : cm;
    }
    total += static_cast<double>(part);
    cut_m = std::min(cut_m, cm);
  }
  if (min_p) cut = std::max(cut, cut_m);  // the max has e = 1 >= min_p, so cut_m <= M
  if (f.top_p < acc_t(1)) cut = std::max(cut, top_p_cut(z, V, f.top_p * static_cast<acc_t>(total), fs, blk));
  // The sampling sum over the kept entries.
  double sum = 0.0;
  for (int64_t v0 = 0; v0 < V; v0 += kBlock) {
    const int64_t n = std::min(kBlock, V - v0);
    const acc_t* x = load_block(z + v0, n, blk);
    const acc_t* e = fs.e.data() + v0;
    acc_t part = 0;
#pragma omp simd reduction(+ : part)
    for (int64_t i = 0; i < n; ++i) part += x[i] >= cut ? e[i] : acc_t(0);
    sum += static_cast<double>(part);
  }
  st.cut = std::min(cut, M);  // the argmax is always kept
  st.ST = static_cast<acc_t>(sum);
}

// The filter phase: filter_position at each job's position, in parallel over positions.
template <typename in_t, typename acc_t>
struct FilterJob {
  const in_t* z;
  RowFilter<acc_t> f;
  PosStats<acc_t>* st;
};

template <typename in_t, typename acc_t>
void run_filters(const std::vector<FilterJob<in_t, acc_t>>& jobs, int64_t V) {
  if (jobs.empty()) return;
  parallel_tasks(static_cast<int64_t>(jobs.size()), 4 * V, [&](int64_t t0, int64_t t1) {
    FilterScratch<acc_t> fs;
    std::unique_ptr<acc_t[]> blk(new acc_t[kBlock]);
    for (int64_t t = t0; t < t1; ++t) filter_position(jobs[t].z, V, jobs[t].f, *jobs[t].st, fs, blk.get());
  });
}

// ------------------------------------------------------------------------------------------------ probabilities

// A one-hot block: 1 at entry a (none when a is outside v0 .. v0 + n - 1), 0 elsewhere.
template <typename acc_t>
inline void onehot_block(int64_t a, int64_t n, int64_t v0, acc_t* out) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = (v0 + i == a) ? acc_t(1) : acc_t(0);
}

// Sampling probabilities of a block v0 .. v0 + n - 1 (reference._distributions, _token_distributions).
template <typename acc_t>
inline void probs_block(const PosStats<acc_t>& st, const acc_t* z, int64_t n, int64_t v0, acc_t* out) {
  if (st.greedy) return onehot_block(st.amax, n, v0, out);
  const acc_t M = st.M, inv = st.inv_t, S = st.ST, c = st.cut;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const acc_t e = sc_exp((z[i] - M) * inv) / S;
    out[i] = z[i] >= c ? e : acc_t(0);
  }
}

// The unscaled probabilities q^(v) = exp(z - M) / S1 of a block (one-hot for a token-only draft).
template <typename acc_t>
inline void unscaled_block(const PosStats<acc_t>& st, const acc_t* z, int64_t n, int64_t v0, acc_t* out) {
  if (st.token) return onehot_block(st.amax, n, v0, out);
  const acc_t M = st.M, S = st.S1;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = sc_exp(z[i] - M) / S;
}

// One sampling probability and one unscaled probability, the scalar forms (z: the logit at v; unread for
// one-hot distributions).
template <typename acc_t>
inline acc_t prob_at(const PosStats<acc_t>& st, acc_t z, int64_t v) {
  if (st.greedy) return v == st.amax ? acc_t(1) : acc_t(0);
  return z >= st.cut ? sc_exp((z - st.M) * st.inv_t) / st.ST : acc_t(0);
}

template <typename acc_t>
inline acc_t unscaled_at(const PosStats<acc_t>& st, acc_t z, int64_t v) {
  if (st.token) return v == st.amax ? acc_t(1) : acc_t(0);
  return sc_exp(z - st.M) / st.S1;
}

// max q^ = 1 / S1 (1 for a token-only draft).
template <typename acc_t>
inline acc_t max_unscaled(const PosStats<acc_t>& st) {
  return acc_t(1) / st.S1;
}

// ------------------------------------------------------------------------------------------------ races

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

// The race of a sampling distribution (the bonus, `sample`): argmax_v s(v) + G(v) over the kept entries,
// s = (z - M) * inv_t, G = gumbel(seed, pos, stream, v), on chunk [lo, hi) of a position at T > 0.
template <typename in_t, typename acc_t>
Race<acc_t> scaled_race_chunk(const in_t* z, const PosStats<acc_t>& st, int64_t seed, int64_t pos, uint32_t stream,
                              int64_t lo, int64_t hi, Scratch<acc_t>& sc) {
  Race<acc_t> r;
  const acc_t M = st.M, inv = st.inv_t, c = st.cut;
  for (int64_t v0 = lo; v0 < hi; v0 += kBlock) {
    const int64_t n = std::min(kBlock, hi - v0);
    gumbel_block(seed, pos, stream, v0, n, sc.g, sc.bits);
    const acc_t* x = load_block(z + v0, n, sc.z0);
    const float* g = sc.g;
    acc_t* s = sc.s;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const acc_t si = (x[i] - M) * inv + static_cast<acc_t>(g[i]);
      s[i] = x[i] >= c ? si : neg_inf<acc_t>();
    }
    race_block(s, n, v0, r);
  }
  return r;
}

// Merge chunk results in vocabulary order (ties keep the earlier chunk: the lowest index).
template <typename acc_t>
inline void merge_into(Race<acc_t>& out, const Race<acc_t>& c) {
  out.mass += c.mass;
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

// A residual race and its fallback, the race over pi itself (used when the residual is rounding noise).
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

// Run the races of `jobs` (fn(job, lo, hi, scratch) -> Part over one chunk) and merge each job's chunks.
template <typename acc_t, typename Part, typename Job, typename F>
std::vector<Part> run_races(const std::vector<Job>& jobs, int64_t V, const F& fn) {
  std::vector<Part> out(jobs.size());
  if (jobs.empty()) return out;
  const auto [part, nch] = map_chunks<acc_t, Part>(jobs, V, 4096, fn);
  for (size_t j = 0; j < jobs.size(); ++j) out[j] = merge_races(part.data() + j * nch, nch);
  return out;
}

}  // namespace cpu
}  // namespace speccas
