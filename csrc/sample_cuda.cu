// sample_native on CUDA: argmax_v s(v) + G(v) over the kept entries, s = (z - M) * (1/T) and
// G = gumbel(seed, offset, STREAM_DRAFT, v) (plain argmax of z at T = 0; ties to the lowest index), -1 for rows
// with NaN / +inf / all -inf logits or a bad parameter: reference.sample_args. One launch, with or without
// filters; no host synchronization, no fills.
//
// Without filters, _sample_race_kernel, grid = rows x chunks. Each block: max, lowest argmax and flags of its
// chunk (stats), then (T > 0) the race over the chunk. The row's max M is not known yet, so a chunk scores
// against its own max m_c: s_c(v) = (z - m_c) * (1/T) + G differs from the exact s(v) + G by the constant
// (m_c - M) / T and by roundings, which are below 1e-4 for every entry that can win (an entry that wins has
// s >= -20, since the max's own score is at least G's minimum, -2.8, and G is below 16.7; so |z - M| / T,
// |z - m_c| / T <= 40 and each score is off by at most a few float ulps of 40). Each chunk keeps its best three
// scores; the last block (ticket per row) knows M and rescores exactly the chunk's best two, which hold its
// exact winner whenever the third is more than 1e-3 below the best; a chunk where three scores are that close
// (or a chunk whose m_c = M, scored exactly already) is resolved by rescanning it exactly. So every token is
// the reference's argmax, computed with the max subtracted first as SPEC.md section 2 says.
//
// Bytes: each row's logits once from DRAM (the chunk's race re-reads it from L1/L2 right after its max), a few
// bytes per (row, chunk) record; rescans (rare) re-read one chunk from L2.
//
// With a filter on some row, _sample_filtered_kernel, grid = rows, one block of 512 threads per row: the max,
// the cutoff (cuda_cutoff.cuh's radix passes) and the race over the whole row against the exact max. Bytes: the
// row once from DRAM, then from L2 per radix level and once more for the race. One block per row leaves most
// SMs idle at small batches: the price of one launch (the cutoff needs the whole row before any chunk can race).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_common.cuh"
#include "cuda_cutoff.cuh"
#include "speccas.h"

namespace speccas {
namespace cuda {
namespace {

constexpr int kMaxRescans = 32;  // ambiguous chunks listed one by one; beyond, the whole row is rescanned

template <typename in_t, typename acc_t>
struct SampleRound {
  const in_t* z;  // [B, V] (row stride sB)
  int64_t sB, V, B, csz, nch;
  RowArg<acc_t> T;
  RowArg<int64_t> seed, offset, top_k;
  RowArg<acc_t> top_p, min_p;
  // chunk records [B * nch]
  acc_t* cmax;
  int64_t* camax;
  int* cbad;
  acc_t* b1;
  int64_t* i1;
  acc_t* b2;
  int64_t* i2;
  acc_t* b3;
  unsigned* ticket;  // [B], zero at rest
};

// The best three (score, index) pairs in the argmax order (the third's index is not kept).
template <typename T>
struct Top3 {
  T v1, v2, v3;
  int64_t i1, i2;
};

template <typename T>
__device__ __forceinline__ void top3_insert(Top3<T>& t, T s, int64_t v) {
  if (better(s, v, t.v1, t.i1)) {
    t.v3 = t.v2;
    t.v2 = t.v1;
    t.i2 = t.i1;
    t.v1 = s;
    t.i1 = v;
  } else if (better(s, v, t.v2, t.i2)) {
    t.v3 = t.v2;
    t.v2 = s;
    t.i2 = v;
  } else if (s > t.v3) {
    t.v3 = s;
  }
}

template <typename T>
__device__ __forceinline__ void top3_merge(Top3<T>& t, Top3<T> u) {
  top3_insert(t, u.v1, u.i1);
  top3_insert(t, u.v2, u.i2);
  top3_insert(t, u.v3, kNoIndex);
}

template <typename T>
__device__ __forceinline__ void warp_top3(Top3<T>& t) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Top3<T> u;
    u.v1 = __shfl_xor_sync(kFull, t.v1, o);
    u.v2 = __shfl_xor_sync(kFull, t.v2, o);
    u.v3 = __shfl_xor_sync(kFull, t.v3, o);
    u.i1 = __shfl_xor_sync(kFull, t.i1, o);
    u.i2 = __shfl_xor_sync(kFull, t.i2, o);
    top3_merge(t, u);
  }
}

template <typename T>
__device__ __forceinline__ Top3<T> empty_top3() {
  return Top3<T>{neg_inf<T>(), neg_inf<T>(), neg_inf<T>(), kNoIndex, kNoIndex};
}

// The exact race score of entry v (reference.sample_args): (z - M) * (1/T) + G over the kept entries.
template <typename in_t, typename acc_t>
__device__ __forceinline__ acc_t exact_score(const in_t* row, int64_t v, acc_t M, acc_t inv_t, acc_t cut,
                                             int64_t seed, int64_t pos) {
  const acc_t x = load1<in_t, acc_t>(row, v);
  const acc_t g = static_cast<acc_t>(gumbel_at(seed, pos, kStreamDraft, v));
  return x >= cut ? mul_rn(x - M, inv_t) + g : neg_inf<acc_t>();
}

// The best exact score over [lo, hi), by the whole block (NT threads).
template <typename in_t, typename acc_t, int NT = kThreads>
__device__ __forceinline__ void rescan(const in_t* row, int64_t lo, int64_t hi, acc_t M, acc_t inv_t, acc_t cut,
                                       int64_t seed, int64_t pos, acc_t& best, int64_t& idx) {
  __shared__ acc_t sh_v[NT / 32];
  __shared__ int64_t sh_i[NT / 32];
  const bool vec = vec_aligned(row);
  acc_t bv = neg_inf<acc_t>();
  int64_t bi = kNoIndex;
  for (int64_t v0 = lo + 4 * static_cast<int64_t>(threadIdx.x); v0 < hi; v0 += 4 * NT) {
    const Philox4 rnd = philox_group(seed, pos, kStreamDraft, v0 >> 2);
    const Group4<in_t, acc_t> g = load4<in_t, acc_t>(row, v0, hi, vec);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const acc_t x = g.get(j);
      if (v0 + j >= hi) break;
      const acc_t s = x >= cut ? mul_rn(x - M, inv_t) + static_cast<acc_t>(bits_to_gumbel(rnd.w[j])) : neg_inf<acc_t>();
      take_if_better(bv, bi, s, v0 + j);
    }
  }
  block_argmax<acc_t, NT / 32>(bv, bi, sh_v, sh_i);
  take_if_better(best, idx, bv, bi);
}

template <typename in_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) _sample_race_kernel(int64_t* __restrict__ tokens,  // [B]
                                                                SampleRound<in_t, acc_t> r) {
  __shared__ Top3<acc_t> sh_t[kWarps];
  const int64_t item = blockIdx.x;
  int64_t b = 0, c = 0;
  split_item(item, r.nch, b, c);
  const in_t* row = r.z + b * r.sB;
  const int64_t lo = c * r.csz, hi = lo + r.csz < r.V ? lo + r.csz : r.V;
  const bool vec = vec_aligned(row);
  const acc_t temp = r.T.at(b), inv_t = inv_temperature(temp);
  const int64_t seed = r.seed.at(b), pos = r.offset.at(b);
  const acc_t cut = neg_inf<acc_t>();  // no filter here (_sample_filtered_kernel has them)
  // stats: the chunk's max, lowest argmax, NaN / +inf.
  acc_t m;
  int64_t am;
  int bad;
  block_scan_max<in_t, acc_t>(row, lo, hi, m, am, bad);
  if (threadIdx.x == 0) {
    r.cmax[item] = m;
    r.camax[item] = am;
    r.cbad[item] = bad;
  }
  // race: the chunk's best three scores against its own max.
  const bool scored = is_finite(temp) && temp > acc_t(0) && !bad && m > neg_inf<acc_t>();
  Top3<acc_t> t = empty_top3<acc_t>();
  if (scored) {  // block-uniform
    for (int64_t v0 = lo + 4 * static_cast<int64_t>(threadIdx.x); v0 < hi; v0 += 4 * kThreads) {
      const Philox4 rnd = philox_group(seed, pos, kStreamDraft, v0 >> 2);
      const Group4<in_t, acc_t> g = load4<in_t, acc_t>(row, v0, hi, vec);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const acc_t x = g.get(j);
        if (v0 + j >= hi) break;
        const acc_t s =
            x >= cut ? mul_rn(x - m, inv_t) + static_cast<acc_t>(bits_to_gumbel(rnd.w[j])) : neg_inf<acc_t>();
        top3_insert(t, s, v0 + j);
      }
    }
    warp_top3(t);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sh_t[warp] = t;
    __syncthreads();
    t = sh_t[0];
    for (int k = 1; k < kWarps; ++k) top3_merge(t, sh_t[k]);
  }
  if (threadIdx.x == 0) {
    r.b1[item] = t.v1;
    r.i1[item] = t.i1;
    r.b2[item] = t.v2;
    r.i2[item] = t.i2;
    r.b3[item] = t.v3;
  }
  if (!arrive_last(r.ticket + b, static_cast<unsigned>(r.nch))) return;

  // emit: the last block of the row merges its chunks.
  __shared__ int s_rescan[kMaxRescans];
  __shared__ int s_nrescan;
  __shared__ acc_t s_best;
  __shared__ int64_t s_idx;
  __shared__ int s_state;  // 0 invalid, 1 greedy (s_idx is the argmax), 2 sampled
  __shared__ acc_t s_M;
  const int64_t base = b * r.nch;
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    if (lane == 0) s_nrescan = 0;
    __syncwarp();
    acc_t M = neg_inf<acc_t>();
    int64_t A = kNoIndex;
    int rbad = 0;
    for (int64_t cc = lane; cc < r.nch; cc += 32) {
      take_if_better(M, A, ldcg(r.cmax + base + cc), ldcg(r.camax + base + cc));
      rbad |= ldcg(r.cbad + base + cc);
    }
    warp_argmax(M, A);
    const acc_t tp = r.top_p.at(b), mp = r.min_p.at(b);
    const bool params_ok = is_finite(temp) && temp >= acc_t(0) && r.top_k.at(b) >= 0 && tp > acc_t(0) &&
                           tp <= acc_t(1) && mp >= acc_t(0) && mp <= acc_t(1);
    const bool ok = params_ok && !__any_sync(kFull, rbad) && M > neg_inf<acc_t>();
    acc_t best = neg_inf<acc_t>();
    int64_t idx = kNoIndex;
    if (ok && temp > acc_t(0)) {
      const acc_t tau = static_cast<acc_t>(1e-3);
      for (int64_t cc = lane; cc < r.nch; cc += 32) {
        const acc_t v1 = ldcg(r.b1 + base + cc);
        if (v1 == neg_inf<acc_t>()) continue;  // nothing kept here: cannot win
        const int64_t j1 = ldcg(r.i1 + base + cc);
        if (ldcg(r.cmax + base + cc) == M) {  // scored against M: exact
          take_if_better(best, idx, v1, j1);
        } else if (ldcg(r.b3 + base + cc) >= v1 - tau) {
          const int slot = atomicAdd(&s_nrescan, 1);
          if (slot < kMaxRescans) s_rescan[slot] = static_cast<int>(cc);
        } else {
          take_if_better(best, idx, exact_score(row, j1, M, inv_t, cut, seed, pos), j1);
          if (ldcg(r.b2 + base + cc) >= v1 - tau) {
            const int64_t j2 = ldcg(r.i2 + base + cc);
            take_if_better(best, idx, exact_score(row, j2, M, inv_t, cut, seed, pos), j2);
          }
        }
      }
      warp_argmax(best, idx);
    }
    if (lane == 0) {
      s_state = ok ? (temp > acc_t(0) ? 2 : 1) : 0;
      s_best = best;
      s_idx = temp > acc_t(0) ? idx : A;
      s_M = M;
    }
  }
  __syncthreads();
  const int state = s_state;
  if (state == 2 && s_nrescan > 0) {  // block-uniform
    acc_t best = s_best;
    int64_t idx = s_idx;
    const acc_t M = s_M;
    const int nr = s_nrescan;
    if (nr > kMaxRescans) {
      rescan(row, 0, r.V, M, inv_t, cut, seed, pos, best, idx);
    } else {
      for (int q = 0; q < nr; ++q) {
        const int64_t lo2 = s_rescan[q] * r.csz;
        rescan(row, lo2, lo2 + r.csz < r.V ? lo2 + r.csz : r.V, M, inv_t, cut, seed, pos, best, idx);
      }
    }
    if (threadIdx.x == 0) s_idx = idx;
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    int64_t e = -1;
    if (state != 0) {
      e = s_idx;
      e = e < 0 ? 0 : (e >= r.V ? r.V - 1 : e);
    }
    tokens[b] = e;
  }
}

// With a filter: one block per row finds the row's max (and, at T = 0, its lowest argmax), the cutoff
// (cuda_cutoff.cuh, from L2), then races over the whole row with exact scores against the max. One launch.
constexpr int kRowThreads = 512;

template <typename in_t, typename acc_t>
__global__ void __launch_bounds__(kRowThreads) _sample_filtered_kernel(int64_t* __restrict__ tokens,  // [B]
                                                                       SampleRound<in_t, acc_t> r) {
  const int64_t b = blockIdx.x, V = r.V;
  const in_t* row = r.z + b * r.sB;
  const RowFilters<acc_t> f{r.T.at(b), r.top_p.at(b), r.min_p.at(b), r.top_k.at(b)};
  acc_t m;
  int64_t am;
  int bad;
  block_scan_max<in_t, acc_t, kRowThreads>(row, 0, V, m, am, bad);
  const bool ok = f.params_ok() && !bad && m > neg_inf<acc_t>();  // block-uniform
  int64_t e = am;
  if (ok && f.T > acc_t(0)) {
    const acc_t cut = f.cuts(V) ? position_cutoff<in_t, acc_t, kRowThreads>(row, V, m, f) : neg_inf<acc_t>();
    acc_t best = neg_inf<acc_t>();
    e = kNoIndex;
    rescan<in_t, acc_t, kRowThreads>(row, 0, V, m, inv_temperature(f.T), cut, r.seed.at(b), r.offset.at(b), best, e);
  }
  if (threadIdx.x == 0) tokens[b] = ok ? (e < 0 ? 0 : (e >= V ? V - 1 : e)) : -1;
}

template <typename in_t, typename acc_t>
void sample_cuda_impl(const SampleInputs& in, const at::Tensor& out) {
  const int64_t B = in.B, V = in.V;
  const at::Device device = in.z.device();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const Split sp = plan_split(B, V, 16 * sms, 1024);
  const int64_t items = B * sp.nch;
  SPECCAS_CHECK(items < (1LL << 31), "the batch is too large for one launch (", B, " rows of ", V, " entries)");
  SampleRound<in_t, acc_t> r{};
  r.z = in.z.data_ptr<in_t>();
  r.sB = in.z.stride(0);
  r.V = V;
  r.B = B;
  r.csz = sp.csz;
  r.nch = sp.nch;
  r.T = row_arg<acc_t>(in.temperature);
  r.seed = row_arg<int64_t>(in.seed);
  r.offset = row_arg<int64_t>(in.offset);
  r.top_k = row_arg<int64_t>(in.top_k);
  r.top_p = row_arg<acc_t>(in.top_p);
  r.min_p = row_arg<acc_t>(in.min_p);
  if (in.filters) {
    launch(_sample_filtered_kernel<in_t, acc_t>, B, kRowThreads, stream, out.data_ptr<int64_t>(), r);
    return;
  }
  const at::Tensor scratch = carve_scratch(device, [&](Carver& cv) {
    r.cmax = cv.take<acc_t>(items);
    r.camax = cv.take<int64_t>(items);
    r.cbad = cv.take<int>(items);
    r.b1 = cv.take<acc_t>(items);
    r.i1 = cv.take<int64_t>(items);
    r.b2 = cv.take<acc_t>(items);
    r.i2 = cv.take<int64_t>(items);
    r.b3 = cv.take<acc_t>(items);
  });
  r.ticket = ticket_counters(B, device, stream);
  launch(_sample_race_kernel<in_t, acc_t>, items, kThreads, stream, out.data_ptr<int64_t>(), r);
}

at::Tensor sample_native_cuda(const at::Tensor& logits, const c10::optional<at::Tensor>& temperature,
                              double temperature_value, const c10::optional<at::Tensor>& top_k, int64_t top_k_value,
                              const c10::optional<at::Tensor>& top_p, double top_p_value,
                              const c10::optional<at::Tensor>& min_p, double min_p_value,
                              const c10::optional<at::Tensor>& seed, int64_t seed_value,
                              const c10::optional<at::Tensor>& offset, int64_t offset_value, int64_t vocab_size) {
  const c10::cuda::CUDAGuard guard(logits.device());  // before the checks, whose copies run on it
  const SampleInputs in =
      check_sample_inputs(logits, temperature, temperature_value, top_k, top_k_value, top_p, top_p_value, min_p,
                          min_p_value, seed, seed_value, offset, offset_value, vocab_size);
  at::Tensor out = at::empty({in.B}, logits.options().dtype(at::kLong));
  if (in.B == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, in.z.scalar_type(), "sample_native_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    sample_cuda_impl<scalar_t, acc_t>(in, out);
  });
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace speccas

TORCH_LIBRARY_IMPL(speccas, CUDA, m) { m.impl("sample_native", &speccas::cuda::sample_native_cuda); }
