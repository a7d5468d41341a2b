// verify_native on CUDA: the same round as verify_cpu.cpp (and reference.verify_args), as six
// launches on the current stream and no host synchronization:
//
//   1. _verify_stats_kernel   grid (positions, chunks): per vocabulary chunk of each used position,
//                             max, sum exp(z - max), sum exp((z - max) / T), first argmax, bad flags.
//   2. _verify_merge_kernel   one thread per row: merges the chunks, row validity, q(x), p(x) and the
//                             rule's decision per draft; marks positions that need a second pass.
//   3. _verify_second_look_kernel grid (draft positions, chunks): TV(q, p) for opt, eta for family B (T > 0).
//   4. _verify_accept_kernel  one thread per row: a_i, the accept loop, the race to run.
//   5. _verify_race_kernel    grid (rows, chunks): the bonus race zp_n + T G, or the residual race
//                             log(w) + G together with its fallback log(pi) + G (w's mass rounding noise).
//   6. _verify_emit_kernel    one thread per row: merges the race chunks and writes the outputs.
//
// Split vocabulary (chunks) when positions are few, as FlashInfer does for small batches.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_common.cuh"
#include "speccas.h"
#include "stats_math.h"

namespace speccas {
namespace cuda {
namespace {

template <typename acc_t>
struct ChunkStatsD {
  acc_t max;
  double s1, sT;
  int64_t amax;
  int bad;
};

template <typename acc_t>
struct PosStatsD {
  acc_t M, S1, ST;
  int64_t amax;
  int bad;
};

template <typename acc_t>
struct RaceD {
  acc_t best, fb_best;
  int64_t idx, fb_idx;
  double mass;  // the chunk's residual mass
};

enum : int { kNoRace = -1, kBonus = 0, kResidual = 1, kPi = 2 };  // kPi: family A with r = 0 (pi = q)
enum : int { kNoSum = 0, kSumTV = 1, kSumEta = 2 };

struct Geometry {
  int64_t B, K, V;
  int64_t sqB, sqL, spB, spL;  // element strides of the logits (last dim contiguous)
  int64_t csz;                 // chunk size (statistics and second pass)
  int nch;                     // chunks per position
  int64_t rcsz;                // chunk size of the race
  int rnch;                    // chunks per race
  RuleArgs rule;
};

template <typename acc_t>
__device__ __forceinline__ bool row_params_ok(const RuleArgs& rule, acc_t T, acc_t alpha) {
  return (T - T) == acc_t(0) && T >= acc_t(0) && alpha_ok(rule, alpha);
}

// A rule without alpha reads it as 0.
template <typename acc_t>
__device__ __forceinline__ acc_t row_alpha(const RuleArgs& rule, const acc_t* alpha, int64_t b) {
  return rule.uses_alpha ? alpha[b] : acc_t(0);
}

__device__ __forceinline__ int64_t clamp_n(int64_t n, int64_t K) { return n < 0 ? 0 : (n > K ? K : n); }

// softmax(z / T) at one entry from merged statistics; one-hot at the first argmax when T = 0.
template <typename acc_t>
__device__ __forceinline__ acc_t prob_at(acc_t z, int64_t v, const PosStatsD<acc_t>& st, acc_t T) {
  if (T == acc_t(0)) return v == st.amax ? acc_t(1) : acc_t(0);
  if (T == acc_t(1)) return div_rn(dexp(z - st.M), st.ST);
  return div_rn(dexp(div_rn(z - st.M, T)), st.ST);
}

template <typename acc_t>
__device__ __forceinline__ acc_t unscaled_at(acc_t z, const PosStatsD<acc_t>& st) {
  return div_rn(dexp(z - st.M), st.S1);
}

// ---- 1. statistics ------------------------------------------------------------------------------

template <typename in_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) _verify_stats_kernel(
    ChunkStatsD<acc_t>* __restrict__ out,   // [P, nch], P = B K + B (K + 1)
    const in_t* __restrict__ zq,            // [B, K, V_d]
    const in_t* __restrict__ zp,            // [B, K + 1, V_t]
    const int64_t* __restrict__ ndraft,     // [B]
    const acc_t* __restrict__ temperature,  // [B]
    const acc_t* __restrict__ alpha,        // [B]
    Geometry geo) {
  __shared__ acc_t sh_v[kWarps];
  __shared__ double sh_d[kWarps];
  __shared__ int64_t sh_i[kWarps];
  const int64_t p = blockIdx.x;
  const int c = blockIdx.y;
  const int64_t K = geo.K, V = geo.V;
  const bool target = p >= geo.B * K;
  const int64_t b = target ? (p - geo.B * K) / (K + 1) : p / K;
  const int64_t i = target ? (p - geo.B * K) % (K + 1) : p % K;
  const int64_t n = clamp_n(ndraft[b], K);
  const acc_t T = temperature[b];
  ChunkStatsD<acc_t>& o = out[p * geo.nch + c];
  const bool used = target ? i <= n : i < n;
  if (!used || !row_params_ok(geo.rule, T, alpha[b])) {
    if (threadIdx.x == 0) o = ChunkStatsD<acc_t>{neg_inf<acc_t>(), 0.0, 0.0, -1, 0};
    return;
  }
  const in_t* z = target ? zp + b * geo.spB + i * geo.spL : zq + b * geo.sqB + i * geo.sqL;
  const int64_t lo = static_cast<int64_t>(c) * geo.csz;
  const int64_t hi = lo + geo.csz < V ? lo + geo.csz : V;
  acc_t m = neg_inf<acc_t>();
  int bad = 0;
  for (int64_t v = lo + threadIdx.x; v < hi; v += kThreads) {
    const acc_t x = load_as<in_t, acc_t>(z + v);
    m = x > m ? x : m;
    bad |= (x != x) | (x == static_cast<acc_t>(INFINITY));
  }
  m = block_max(m, sh_v);
  bad = static_cast<int>(block_sum(static_cast<double>(bad), sh_d) > 0.0);
  const bool sums = !(target && i == n);  // the bonus position's sums are never read
  const bool argmax = T == acc_t(0);
  const bool scaled = sums && T > acc_t(0) && T != acc_t(1);
  acc_t s1 = 0, sT = 0;
  int64_t am = INT64_MAX;
  if (!bad && m != neg_inf<acc_t>() && (sums || argmax)) {
    for (int64_t v = lo + threadIdx.x; v < hi; v += kThreads) {
      const acc_t x = load_as<in_t, acc_t>(z + v);
      if (sums) s1 += dexp(x - m);
      if (scaled) sT += dexp(div_rn(x - m, T));
      if (argmax && x == m && v < am) am = v;
    }
  }
  const double d1 = block_sum(static_cast<double>(s1), sh_d);
  const double dT = scaled ? block_sum(static_cast<double>(sT), sh_d) : d1;
  am = block_min_i64(am, sh_i);
  if (threadIdx.x == 0) o = ChunkStatsD<acc_t>{m, d1, dT, am == INT64_MAX ? -1 : am, bad};
}

template <typename acc_t>
__device__ PosStatsD<acc_t> merge_stats(const ChunkStatsD<acc_t>* c, int nch, acc_t T) {
  PosStatsD<acc_t> out{acc_t(0), acc_t(1), acc_t(1), 0, 0};
  merge_chunk_stats(c, nch, T, out);  // stats_math.h, shared with the CPU build
  return out;
}

// ---- 2. per-row decisions -----------------------------------------------------------------------

template <typename acc_t>
struct DraftState {  // arrays [B, K]
  acc_t* a;
  acc_t* qx;
  acc_t* px;
  acc_t* tv;  // TV(q, p), for the rules that read it
  acc_t* w;   // family A: the blend weight r; family B: eta
  int8_t* defer;
  int8_t* in_a;
  int8_t* x_ok;
  int8_t* need;
};

template <typename acc_t>
__device__ __forceinline__ void set_accept(const RuleArgs& R, acc_t al, DraftState<acc_t> s, int64_t k) {
  s.a[k] = s.x_ok[k] ? acceptance(R.family, al, s.w[k], s.in_a[k] != 0, s.qx[k], s.px[k]) : acc_t(0);
}

// Family A: the weight r once TV is known (rules that read it).
template <typename acc_t>
__device__ __forceinline__ void weigh(const RuleArgs& R, acc_t al, const PosStatsD<acc_t>& sq,
                                      const PosStatsD<acc_t>& sp, DraftState<acc_t> s, int64_t k) {
  s.w[k] = blend_weight(R.code, al, div_rn(acc_t(1), sq.S1), div_rn(acc_t(1), sp.S1), s.tv[k]);
  s.defer[k] = s.w[k] > acc_t(0);
}

// v in A at one entry, from the logits of the two models there.
template <typename acc_t>
__device__ __forceinline__ bool member_at(const RuleArgs& R, acc_t al, acc_t zq, acc_t zp, const PosStatsD<acc_t>& sq,
                                          const PosStatsD<acc_t>& sp) {
  const acc_t qh = R.reads_qh ? unscaled_at(zq, sq) : acc_t(0);
  const acc_t ph = R.reads_ph ? unscaled_at(zp, sp) : acc_t(0);
  return in_token_set(R.code, al, qh, ph, div_rn(acc_t(1), sp.S1));
}

template <typename in_t, typename acc_t>
__global__ void _verify_merge_kernel(
    PosStatsD<acc_t>* __restrict__ pos_stats,       // [P]
    DraftState<acc_t> st,
    bool* __restrict__ valid,                       // [B]
    const ChunkStatsD<acc_t>* __restrict__ chunks,  // [P, nch]
    const in_t* __restrict__ zq, const in_t* __restrict__ zp,
    const int64_t* __restrict__ x,                  // [B, K]
    const int64_t* __restrict__ ndraft, const acc_t* __restrict__ temperature, const acc_t* __restrict__ alpha,
    Geometry geo) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= geo.B) return;
  const int64_t K = geo.K, V = geo.V;
  const RuleArgs& R = geo.rule;
  const int64_t n = clamp_n(ndraft[b], K);
  const acc_t T = temperature[b], al = row_alpha(R, alpha, b);
  bool ok = row_params_ok(R, T, alpha[b]);
  if (ok) {
    for (int64_t i = 0; i < n && ok; ++i) {
      const int64_t p = b * K + i;
      pos_stats[p] = merge_stats(chunks + p * geo.nch, geo.nch, T);
      ok = !pos_stats[p].bad;
    }
    for (int64_t i = 0; i <= n && ok; ++i) {
      const int64_t p = geo.B * K + b * (K + 1) + i;
      pos_stats[p] = merge_stats(chunks + p * geo.nch, geo.nch, T);
      ok = !pos_stats[p].bad;
    }
  }
  valid[b] = ok;
  if (!ok) return;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = b * K + i;
    const PosStatsD<acc_t> sq = pos_stats[k];
    const PosStatsD<acc_t> sp = pos_stats[geo.B * K + b * (K + 1) + i];
    const in_t* rq = zq + b * geo.sqB + i * geo.sqL;
    const in_t* rp = zp + b * geo.spB + i * geo.spL;
    const int64_t xv = x[k];
    const bool xok = xv >= 0 && xv < V;
    st.x_ok[k] = xok;
    st.qx[k] = xok ? prob_at(load_as<in_t, acc_t>(rq + xv), xv, sq, T) : acc_t(0);
    st.px[k] = xok ? prob_at(load_as<in_t, acc_t>(rp + xv), xv, sp, T) : acc_t(0);
    st.need[k] = kNoSum;
    st.tv[k] = acc_t(0);
    st.w[k] = acc_t(0);
    st.in_a[k] = 0;
    switch (static_cast<FamilyCode>(R.family)) {
      case kFamilyLossy:
        st.defer[k] = 1;
        break;
      case kFamilyB: {
        const bool in_x =
            xok && member_at(R, al, load_as<in_t, acc_t>(rq + xv), load_as<in_t, acc_t>(rp + xv), sq, sp);
        st.in_a[k] = in_x;
        st.defer[k] = !in_x;
        if (!(in_x && st.qx[k] > acc_t(0))) {  // eta is read: by a_i, or by the residual here
          if (T == acc_t(0)) {  // q is one-hot at its argmax
            const int64_t am = sq.amax;
            st.w[k] = member_at(R, al, load_as<in_t, acc_t>(rq + am), load_as<in_t, acc_t>(rp + am), sq, sp)
                          ? acc_t(0)
                          : acc_t(1);
          } else {
            st.need[k] = kSumEta;
            continue;
          }
        }
        break;
      }
      case kFamilyA:
        if (R.needs_tv) {
          if (T == acc_t(0)) {
            st.tv[k] = sq.amax != sp.amax ? acc_t(1) : acc_t(0);
          } else {
            st.need[k] = kSumTV;
            continue;
          }
        }
        weigh(R, al, sq, sp, st, k);
        break;
    }
    set_accept(R, al, st, k);
  }
}

// ---- 3. second pass: TV or eta ------------------------------------------------------------------

template <typename in_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) _verify_second_look_kernel(
    double* __restrict__ out,                          // [B K, nch]
    const PosStatsD<acc_t>* __restrict__ pos_stats,   // [P]
    const int8_t* __restrict__ need,                  // [B, K]
    const in_t* __restrict__ zq, const in_t* __restrict__ zp,
    const acc_t* __restrict__ temperature, const acc_t* __restrict__ alpha, Geometry geo) {
  __shared__ double sh_d[kWarps];
  const int64_t k = blockIdx.x;
  const int c = blockIdx.y;
  const int mode = need[k];
  if (mode == kNoSum) return;  // block-uniform
  const int64_t K = geo.K, V = geo.V;
  const int64_t b = k / K, i = k % K;
  const acc_t T = temperature[b];
  const PosStatsD<acc_t> sq = pos_stats[k];
  const PosStatsD<acc_t> sp = pos_stats[geo.B * K + b * (K + 1) + i];
  const in_t* rq = zq + b * geo.sqB + i * geo.sqL;
  const in_t* rp = zp + b * geo.spB + i * geo.spL;
  const acc_t al = row_alpha(geo.rule, alpha, b);
  const int64_t lo = static_cast<int64_t>(c) * geo.csz;
  const int64_t hi = lo + geo.csz < V ? lo + geo.csz : V;
  acc_t s = 0;
  for (int64_t v = lo + threadIdx.x; v < hi; v += kThreads) {
    const acc_t q = prob_at(load_as<in_t, acc_t>(rq + v), v, sq, T);
    if (mode == kSumTV) {
      const acc_t d = q - prob_at(load_as<in_t, acc_t>(rp + v), v, sp, T);
      s += d > acc_t(0) ? d : acc_t(0);
    } else {
      s += member_at(geo.rule, al, load_as<in_t, acc_t>(rq + v), load_as<in_t, acc_t>(rp + v), sq, sp) ? acc_t(0) : q;
    }
  }
  const double total = block_sum(static_cast<double>(s), sh_d);
  if (threadIdx.x == 0) out[k * geo.nch + c] = total;
}

// ---- 4. accept loop -----------------------------------------------------------------------------

template <typename acc_t>
struct RaceSetup {  // arrays [B]
  int* kind;
  int64_t* m;
};

template <typename in_t, typename acc_t>
__global__ void _verify_accept_kernel(
    RaceSetup<acc_t> rs, DraftState<acc_t> st,
    int64_t* __restrict__ tokens,        // [B, K + 1], prefilled with -1
    int64_t* __restrict__ num_accepted,  // [B]
    bool* __restrict__ deferred,         // [B, K]
    float* __restrict__ accept_prob,     // [B, K]
    const bool* __restrict__ valid, const double* __restrict__ sums, const PosStatsD<acc_t>* __restrict__ pos_stats,
    const int64_t* __restrict__ x, const int64_t* __restrict__ ndraft, const acc_t* __restrict__ temperature,
    const acc_t* __restrict__ alpha, const int64_t* __restrict__ seed, const int64_t* __restrict__ offset,
    Geometry geo) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= geo.B) return;
  rs.kind[b] = kNoRace;
  if (!valid[b]) return;
  const int64_t K = geo.K;
  const RuleArgs& R = geo.rule;
  const int64_t n = clamp_n(ndraft[b], K);
  const acc_t T = temperature[b], al = row_alpha(R, alpha, b);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = b * K + i;
    if (st.need[k] != kNoSum) {
      double s = 0.0;
      for (int c = 0; c < geo.nch; ++c) s += sums[k * geo.nch + c];
      if (st.need[k] == kSumTV) {
        st.tv[k] = static_cast<acc_t>(s);
        weigh(R, al, pos_stats[k], pos_stats[geo.B * K + b * (K + 1) + i], st, k);
      } else {
        st.w[k] = static_cast<acc_t>(s);
      }
      set_accept(R, al, st, k);
    }
    deferred[k] = st.defer[k] != 0;
    accept_prob[k] = static_cast<float>(st.a[k]);
  }
  int64_t m = 0;
  while (m < n && static_cast<acc_t>(uniform(seed[b], offset[b] + m, kStreamAccept, 0)) < st.a[b * K + m]) {
    tokens[b * (K + 1) + m] = x[b * K + m];
    ++m;
  }
  num_accepted[b] = m;
  rs.m[b] = m;
  if (m == n) {
    if (T == acc_t(0)) {
      tokens[b * (K + 1) + m] = pos_stats[geo.B * K + b * (K + 1) + m].amax;
      return;
    }
    rs.kind[b] = kBonus;
    return;
  }
  rs.kind[b] = residual_is_empty(R.family, st.w[b * K + m]) ? kPi : kResidual;
}

// ---- 5. the race --------------------------------------------------------------------------------

template <typename in_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) _verify_race_kernel(
    RaceD<acc_t>* __restrict__ out,  // [B, rnch]
    RaceSetup<acc_t> rs, DraftState<acc_t> st, const PosStatsD<acc_t>* __restrict__ pos_stats,
    const in_t* __restrict__ zq, const in_t* __restrict__ zp, const acc_t* __restrict__ temperature,
    const acc_t* __restrict__ alpha, const int64_t* __restrict__ seed, const int64_t* __restrict__ offset,
    Geometry geo) {
  __shared__ acc_t sh_v[kWarps];
  __shared__ int64_t sh_i[kWarps];
  __shared__ double sh_d[kWarps];
  const int64_t b = blockIdx.x;
  const int c = blockIdx.y;
  const int kind = rs.kind[b];
  if (kind == kNoRace) return;  // block-uniform
  const int64_t K = geo.K, V = geo.V;
  const int64_t m = rs.m[b];
  const acc_t T = temperature[b];
  const int64_t sd = seed[b], pos = offset[b] + m;
  const in_t* rp = zp + b * geo.spB + m * geo.spL;
  const in_t* rq = zq + b * geo.sqB + (m < K ? m : 0) * geo.sqL;
  const RuleArgs& R = geo.rule;
  const acc_t al = row_alpha(R, alpha, b);
  PosStatsD<acc_t> sq{}, sp{};
  acc_t wm = 0;  // family A: r; family B: eta
  if (kind != kBonus) {
    sq = pos_stats[b * K + m];
    sp = pos_stats[geo.B * K + b * (K + 1) + m];
    wm = st.w[b * K + m];
  }
  const int64_t lo = static_cast<int64_t>(c) * geo.rcsz;  // a multiple of 4
  const int64_t hi = lo + geo.rcsz < V ? lo + geo.rcsz : V;
  acc_t best = neg_inf<acc_t>(), fb_best = neg_inf<acc_t>();
  int64_t idx = -1, fb_idx = -1;
  double mass = 0.0;
  // One thread per group of 4 entries: one Philox call serves all four.
  for (int64_t g0 = lo + 4 * static_cast<int64_t>(threadIdx.x); g0 < hi; g0 += 4 * kThreads) {
    const Philox4 r = philox_group(sd, pos, kStreamEmit, g0 >> 2);
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const int64_t v = g0 + l;
      if (v >= hi) break;
      const acc_t g = static_cast<acc_t>(bits_to_gumbel(r.w[l]));
      acc_t s, fs = neg_inf<acc_t>();
      if (kind == kBonus) {
        s = load_as<in_t, acc_t>(rp + v) + T * g;
      } else {
        const acc_t zqv = load_as<in_t, acc_t>(rq + v), zpv = load_as<in_t, acc_t>(rp + v);
        const acc_t q = prob_at(zqv, v, sq, T), p = prob_at(zpv, v, sp, T);
        const bool in_a = R.family == kFamilyB && member_at(R, al, zqv, zpv, sq, sp);
        const acc_t pi = blended(R.family, wm, in_a, q, p);
        const acc_t d = pi - q;
        const acc_t w = d > acc_t(0) ? d : acc_t(0);
        mass += static_cast<double>(w);
        s = kind == kPi ? neg_inf<acc_t>() : dlog(w) + g;
        fs = dlog(pi) + g;
      }
      if (idx < 0 || s > best) {  // each thread visits its entries in increasing order
        best = s;
        idx = v;
      }
      if (fb_idx < 0 || fs > fb_best) {
        fb_best = fs;
        fb_idx = v;
      }
    }
  }
  block_argmax(best, idx, sh_v, sh_i);
  block_argmax(fb_best, fb_idx, sh_v, sh_i);
  mass = block_sum(mass, sh_d);
  if (threadIdx.x == 0) out[b * geo.rnch + c] = RaceD<acc_t>{best, fb_best, idx, fb_idx, mass};
}

// ---- 6. emit ------------------------------------------------------------------------------------

template <typename acc_t>
__global__ void _verify_emit_kernel(int64_t* __restrict__ tokens, const RaceD<acc_t>* __restrict__ races,
                                    RaceSetup<acc_t> rs, Geometry geo) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= geo.B) return;
  const int kind = rs.kind[b];
  if (kind == kNoRace) return;
  acc_t best = neg_inf<acc_t>(), fb_best = neg_inf<acc_t>();
  int64_t idx = -1, fb_idx = -1;
  double mass = 0.0;
  for (int c = 0; c < geo.rnch; ++c) {  // chunks in vocabulary order: ties keep the lowest index
    const RaceD<acc_t> r = races[b * geo.rnch + c];
    mass += r.mass;
    if (r.idx >= 0 && (idx < 0 || r.best > best)) {
      best = r.best;
      idx = r.idx;
    }
    if (r.fb_idx >= 0 && (fb_idx < 0 || r.fb_best > fb_best)) {
      fb_best = r.fb_best;
      fb_idx = r.fb_idx;
    }
  }
  const bool residual = kind != kBonus;
  int64_t e = (residual && !(mass > residual_eps<acc_t>())) ? fb_idx : idx;
  e = e < 0 ? 0 : (e >= geo.V ? geo.V - 1 : e);
  tokens[b * (geo.K + 1) + rs.m[b]] = e;
}

// ---- launcher -----------------------------------------------------------------------------------

template <typename in_t, typename acc_t>
void verify_cuda_impl(const VerifyInputs& in, at::Tensor& tokens, at::Tensor& num_accepted, at::Tensor& deferred,
                      at::Tensor& accept_prob, at::Tensor& valid) {
  const int64_t B = in.B, K = in.K, V = in.V;
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t P = B * K + B * (K + 1);
  Geometry geo;
  geo.B = B;
  geo.K = K;
  geo.V = V;
  geo.sqB = in.zq.stride(0);
  geo.sqL = in.zq.stride(1);
  geo.spB = in.zp.stride(0);
  geo.spL = in.zp.stride(1);
  geo.nch = static_cast<int>(plan_chunks_cuda(P, V, sms));
  geo.csz = ceil_div_h(ceil_div_h(V, geo.nch), 64) * 64;
  geo.nch = static_cast<int>(ceil_div_h(V, geo.csz));
  geo.rnch = static_cast<int>(plan_chunks_cuda(B, V, sms));
  geo.rcsz = ceil_div_h(ceil_div_h(V, geo.rnch), 64) * 64;
  geo.rnch = static_cast<int>(ceil_div_h(V, geo.rcsz));
  geo.rule = in.rule;

  auto bytes = [&](int64_t n) { return at::empty({n}, in.zq.options().dtype(at::kByte)); };
  at::Tensor ws_chunks = bytes(P * geo.nch * static_cast<int64_t>(sizeof(ChunkStatsD<acc_t>)));
  at::Tensor ws_pos = bytes(P * static_cast<int64_t>(sizeof(PosStatsD<acc_t>)));
  const int64_t BK = B * K > 0 ? B * K : 1;
  at::Tensor ws_acc = at::empty({5, BK}, in.zq.options().dtype(in.alpha.scalar_type()));
  at::Tensor ws_flags = at::zeros({4, BK}, in.zq.options().dtype(at::kChar));
  at::Tensor ws_sums = at::zeros({BK * geo.nch}, in.zq.options().dtype(at::kDouble));
  at::Tensor ws_kind = at::empty({B}, in.zq.options().dtype(at::kInt));
  at::Tensor ws_m = at::empty({B}, in.zq.options().dtype(at::kLong));
  at::Tensor ws_race = bytes(B * geo.rnch * static_cast<int64_t>(sizeof(RaceD<acc_t>)));

  auto* chunks = reinterpret_cast<ChunkStatsD<acc_t>*>(ws_chunks.data_ptr());
  auto* pos = reinterpret_cast<PosStatsD<acc_t>*>(ws_pos.data_ptr());
  acc_t* accp = ws_acc.data_ptr<acc_t>();
  int8_t* flg = ws_flags.data_ptr<int8_t>();
  DraftState<acc_t> st{accp,         accp + BK,     accp + 2 * BK, accp + 3 * BK, accp + 4 * BK,
                       flg,          flg + BK,      flg + 2 * BK,  flg + 3 * BK};
  RaceSetup<acc_t> rs{ws_kind.data_ptr<int>(), ws_m.data_ptr<int64_t>()};
  const in_t* zq = in.zq.data_ptr<in_t>();
  const in_t* zp = in.zp.data_ptr<in_t>();
  const acc_t* T = in.temperature.data_ptr<acc_t>();
  const acc_t* al = in.alpha.data_ptr<acc_t>();
  const int64_t* nd = in.n.data_ptr<int64_t>();
  const int64_t* x = in.x.data_ptr<int64_t>();
  const int64_t* seed = in.seed.data_ptr<int64_t>();
  const int64_t* offset = in.offset.data_ptr<int64_t>();
  const int row_threads = 128;
  const unsigned row_blocks = static_cast<unsigned>(ceil_div_h(B, row_threads));

  _verify_stats_kernel<in_t, acc_t><<<dim3(static_cast<unsigned>(P), geo.nch), kThreads, 0, stream>>>(
      chunks, zq, zp, nd, T, al, geo);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  _verify_merge_kernel<in_t, acc_t><<<row_blocks, row_threads, 0, stream>>>(
      pos, st, valid.data_ptr<bool>(), chunks, zq, zp, x, nd, T, al, geo);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (K > 0) {
    _verify_second_look_kernel<in_t, acc_t><<<dim3(static_cast<unsigned>(B * K), geo.nch), kThreads, 0, stream>>>(
        ws_sums.data_ptr<double>(), pos, st.need, zq, zp, T, al, geo);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  _verify_accept_kernel<in_t, acc_t><<<row_blocks, row_threads, 0, stream>>>(
      rs, st, tokens.data_ptr<int64_t>(), num_accepted.data_ptr<int64_t>(), deferred.data_ptr<bool>(),
      accept_prob.data_ptr<float>(), valid.data_ptr<bool>(), ws_sums.data_ptr<double>(), pos, x, nd, T, al, seed,
      offset, geo);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  _verify_race_kernel<in_t, acc_t><<<dim3(static_cast<unsigned>(B), geo.rnch), kThreads, 0, stream>>>(
      reinterpret_cast<RaceD<acc_t>*>(ws_race.data_ptr()), rs, st, pos, zq, zp, T, al, seed, offset, geo);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  _verify_emit_kernel<acc_t><<<row_blocks, row_threads, 0, stream>>>(
      tokens.data_ptr<int64_t>(), reinterpret_cast<RaceD<acc_t>*>(ws_race.data_ptr()), rs, geo);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

VerifyResult verify_native_cuda(const at::Tensor& draft_logits, const at::Tensor& target_logits,
                                const at::Tensor& draft_tokens, at::IntArrayRef rule,
                               at::ArrayRef<double> alpha_range, const at::Tensor& alpha,
                                const at::Tensor& temperature, const at::Tensor& seed, const at::Tensor& offset,
                                const at::Tensor& num_draft_tokens, int64_t vocab_size) {
  const VerifyInputs in = check_verify_inputs(draft_logits, target_logits, draft_tokens, rule, alpha_range, alpha, temperature,
                                              seed, offset, num_draft_tokens, vocab_size);
  const c10::cuda::CUDAGuard guard(draft_logits.device());
  VerifyResult out = empty_verify_outputs(in, draft_logits.options());
  if (in.B > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, in.zq.scalar_type(), "verify_native_cuda", [&] {
      using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      verify_cuda_impl<scalar_t, acc_t>(in, std::get<0>(out), std::get<1>(out), std::get<2>(out), std::get<3>(out),
                                       std::get<4>(out));
    });
  }
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace speccas

TORCH_LIBRARY_IMPL(speccas, CUDA, m) { m.impl("verify_native", &speccas::cuda::verify_native_cuda); }
