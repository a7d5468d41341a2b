// verify_native on CUDA: one round of SPEC.md sections 1-5, token for token like reference.verify_args (and the
// C++ CPU op), in two launches on the current stream, no host synchronization, no fills: the kernels write every
// output element. verify_divergence_native: the same round, and the divergences of SPEC.md section 6 from its own
// statistics (phase "divergence", below), in the same two launches.
//
// Launch count per call (read from verify_cuda_impl below): exactly 2 (_verify_stats_kernel, then
// _verify_race_kernel), with or without sampling filters, per-row tensors or Python numbers alike, with or without
// the divergences (their kDiv instances); B = 0 launches nothing. Other device work: none on the first call of a
// (device, stream) but one at::zeros of the ticket counters, made once and reused (again when a call needs more of
// them: the divergences take B more), and a memset node inside a CUDA graph being captured; the argument checks
// (speccas.h) fill nothing: parameters given as numbers are kernel arguments, and they copy only inputs that
// need it (a non-contiguous per-row tensor or logits row, two logits dtypes). sample_cuda.cu: exactly 1 launch.
//
// Phases (SPEC.md section 9) and where they run:
//
//   launch 1  _verify_stats_kernel, grid = positions x chunks (P = B K drafter + B (K + 1) target slots;
//             unused slots exit at once):
//     stats        each block: max z, sum exp(z - max) (T = 1), sum exp((z - max) / T), the lowest argmax,
//                  NaN / +inf, over its chunk of one position.
//     merge        the last chunk block of a position (ticket) merges the chunk records with one warp (lanes
//                  over chunks, shuffles).
//     filter       (a filter on: the kernel's kFilter instance) that same block finds the position's logit cutoff
//                  of top-k / top-p / min-p (cuda_cutoff.cuh; keep z >= cut) and the sampling sum over the kept
//                  entries, which replaces the merged one.
//     decide       the last position of a row (ticket) runs the row with one warp (lanes over draft
//                  positions): validity, q(x), p(x), the rule's decision where the merged statistics suffice.
//     accept       same warp, when no position needs a second look: a_i, the accept loop by ballot (m = the
//                  first rejection), every output but the emitted token; at T = 0 the bonus (p's argmax) too.
//                  A row whose rule still needs TV (opt, T > 0) or eta (token sets, T > 0, draft not surely
//                  accepted) is left "pending" with its positions marked.
//
//   launch 2  _verify_race_kernel, grid = B K x chunks (second look) + B x chunks (race); each block takes
//             its work item from an atomic counter at start, so an item's number says that every item before
//             it has already started: the second-look items come first and never wait, the race items of a
//             pending row wait for it (a flag) — they wait only on blocks that are already running, so the
//             launch cannot deadlock whatever else the GPU runs.
//     second look  per marked (position, chunk): sum max(0, q - p) (TV) or sum over v not in A of q (eta); the
//                  last such block of the row (ticket) merges the sums (one warp per position, lanes over
//                  chunks) and runs accept as above, then raises the row's flag.
//     race         per (row, chunk) of a row that emits by sampling: the bonus race (s_n + G over the kept
//                  entries) or the residual race (log max(0, pi - q) + G, with its fallback log pi + G and the
//                  residual mass for SPEC.md section 4's threshold), best score per chunk.
//     emit         the last race block of the row (ticket) merges the chunks with one warp (ties to the lowest
//                  index) and writes the emitted token.
//
//   divergence (verify_divergence_native only, the kernels' kDiv instances): launch 1 marks every used position of
//                  a row at T > 0 with drafter logits for the second look (decisions that do not read its sum
//                  decide as without; the sums a decision reads keep their chunks and bits), which then sums TV(q,
//                  p) beside eta for token sets, and TV(q, p) and sum_v max(0, min(q, p / (1 - alpha)) - p) for
//                  lossy. The row's final accept (finalize_row) writes both divergences: closed forms where q is
//                  one-hot (T = 0, token-only drafts), family A (1 - r) TV(q, p), lossy its sum; a token set's
//                  TV(pi, p) = sum_{v in A} max(0, q - (1 - eta) p) needs eta first: law items (B K x chunks, between
//                  the second-look and the race items, waiting on the row's flag like the race) sum it, and the last
//                  of the row writes it. The formulas and proofs are csrc/verify_cpu.cpp's (divergences, div_chunk).
//
// Tickets and the work counter are uint32 counters, zero at rest: the block that completes a count resets it,
// so no memset runs per call (cuda_common.cuh: ticket_counters, cached per device and stream).
//
// Bytes per call (E = bytes per logit, V the vocabulary, n_b row b's drafts, P_used = sum over rows of
// (n_b if drafter logits) + n_b + 1 positions; L2 = 50 MB on an H200):
//   launch 1  reads each used position's logits exactly once: P_used * V * E from DRAM (vector loads of 4 entries),
//             writes and reads back about 40 bytes per (position, chunk) record, 32 per position; the row warp
//             reads x and two logits per draft position (four at T = 0 for token sets). Positions beyond n_b
//             read nothing. A position whose filter cuts is re-read by its last block from L2 (it was just
//             read): per radix level ceil(bits / 11) (bits: 16 bf16, 19 fp16, 32 fp32, 64 fp64) for top-k (k >= 2)
//             and top-p, one pass for min-p, one for the kept entries' sum; 4 bytes a position of cutoff.
//   launch 2  second look: re-reads q_i and p_i (only q_i for token_v1) at the marked positions: every draft
//             position of opt at T > 0, and for token sets the positions whose draft is not surely accepted;
//             from L2 when the round's logits fit in it (B (2K + 1) V E below about 40 MB), else from DRAM.
//             race: one position per row that samples: p_n (bonus, E V) or q_m and p_m (residual, 2 E V), same
//             L2 rule; rows with T = 0 that accept every draft read nothing here.
//   divergence asked: the second look reads q_i and p_i at every used position at T > 0 with drafter logits (2 E V
//             each, same L2 rule), token sets read them once more in the law items; the closed forms read one
//             logit per position; 8 bytes per position of outputs.
// Nothing else touches the device: per-row parameters given as numbers are kernel arguments, scratch comes
// from the caching allocator, outputs are torch.empty.
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

enum : unsigned { kStatePending = 1, kStateReady = 2, kStateNoRace = 3 };  // a row's flag for launch 2
enum : int { kRaceBonus = 0, kRaceResidual = 1, kRacePi = 2, kRaceNone = 3 };  // kRacePi: family A, r = 0

constexpr uint64_t kWaitLimitNs = 20ull * 1000 * 1000 * 1000;  // a pending row never takes this long: trap

// The round as every kernel reads it (by value). Layouts of speccas.h's VerifyInputs, addressed in place.
template <typename in_t, typename acc_t>
struct Round {
  const in_t* zq;      // [B, K, V_d] padded or [N, V_d] ragged; null: token-only drafts
  const in_t* zp;      // [B, K + 1, V_t] or [N + B, V_t]
  const int64_t* x;    // [B, K] or [N]
  const int64_t* cu;   // [B + 1] ragged, else null
  RowArg<int64_t> n, top_k, seed, offset;
  RowArg<acc_t> T, alpha, top_p, min_p;
  acc_t* cut;  // [P] filter cutoffs (launch 1 writes them), null when no filter is on
  int64_t B, K, V, N, QS;  // QS: drafter slots (B K with drafter logits, else 0)
  int64_t sqB, sqL, spB, spL;
  RuleArgs rule;
  bool hq;  // drafter logits given (else token-only drafts: q one-hot at the draft)

  __device__ __forceinline__ bool has_q() const { return hq; }
  __device__ __forceinline__ int64_t drafts(int64_t b) const {
    int64_t nb;
    if (cu != nullptr) {
      nb = N > 0 ? ldg(cu + b + 1) - ldg(cu + b) : 0;
    } else {
      nb = n.at(b);
    }
    return nb < 0 ? 0 : (nb > K ? K : nb);
  }
  // Ragged rows as reference.padded gathers them: indices clamped into the flat tensors.
  __device__ __forceinline__ int64_t flat_q(int64_t b, int64_t i) const {
    const int64_t j = ldg(cu + b) + i;
    return j < 0 ? 0 : (j > N - 1 ? N - 1 : j);
  }
  __device__ __forceinline__ const in_t* q_row(int64_t b, int64_t i) const {
    return cu != nullptr ? zq + flat_q(b, i) * sqL : zq + b * sqB + i * sqL;
  }
  __device__ __forceinline__ const in_t* p_row(int64_t b, int64_t i) const {
    if (cu == nullptr) return zp + b * spB + i * spL;
    const int64_t j = ldg(cu + b) + b + i;
    return zp + (j < 0 ? 0 : (j > N + B - 1 ? N + B - 1 : j)) * spL;
  }
  __device__ __forceinline__ int64_t x_at(int64_t b, int64_t i) const {
    return cu != nullptr ? ldg(x + flat_q(b, i)) : ldg(x + b * K + i);
  }
  __device__ __forceinline__ int64_t qslot(int64_t b, int64_t i) const { return b * K + i; }
  __device__ __forceinline__ int64_t pslot(int64_t b, int64_t i) const { return QS + b * (K + 1) + i; }
  // Slot s -> (row, position, drafter?)
  __device__ __forceinline__ bool locate(int64_t s, int64_t& b, int64_t& i) const {
    if (s < QS) {
      split_item(s, K, b, i);
      return true;
    }
    split_item(s - QS, K + 1, b, i);
    return false;
  }
};

// Scratch of one call and the ticket counters.
template <typename acc_t>
struct Work {
  acc_t* cmax;  // [P * nch] stats per (position, chunk)
  double* cs1;
  double* csT;
  int64_t* camax;
  int* cbad;
  acc_t* pM;  // [P] merged statistics
  acc_t* pS1;
  acc_t* pST;
  int64_t* pamax;
  int* pbad;
  unsigned* state;  // [B] rows: flag, race kind, m, r or eta at m, positions left for the second look
  int* kind;
  int64_t* m;
  acc_t* w;
  unsigned* needed;
  unsigned char* need;  // [B * K] a second look is needed
  acc_t* look;          // [B * K] TV or eta once known
  double* lsum;         // [B * K * nch2] second-look partial sums
  acc_t* look2;         // divergence only: [B * K] the second look's second sum (second_look)
  double* lsum2;        // [B * K * nch2] its partial sums
  double* dsum;         // divergence only, token sets: [B * K * nch2] partial sums of the law's pass
  acc_t* rbest;         // [B * rnch] race: best log w + G (or bonus score) per chunk, fallback log pi + G, mass
  int64_t* ridx;
  acc_t* rbest_pi;
  int64_t* ridx_pi;
  double* rmass;
  unsigned* ids;  // counters: launch 2's work counter, tickets per position, row (x3)
  unsigned* pos_ticket;
  unsigned* row_ticket;
  unsigned* look_ticket;
  unsigned* race_ticket;
  unsigned* div_ticket;  // divergence only
  int64_t csz, nch, csz2, nch2, rcsz, rnch;
  int64_t looks, laws, items2;  // launch 2: second-look items (B K nch2), law items (B K nch2 or 0), all items
};

struct Outs {
  int64_t* tokens;        // [B, K + 1]
  int64_t* num_accepted;  // [B]
  bool* deferred;         // [B, K]
  float* accept_prob;     // [B, K]
  bool* valid;            // [B]
  float* div;             // [B, K] divergence, draft_divergence: only when asked (kDiv), else null
  float* draft_div;
};

template <typename acc_t>
__device__ __forceinline__ PosView<acc_t> pos_view(const Work<acc_t>& w, const acc_t* cut, int64_t s) {
  PosView<acc_t> v;
  v.M = ldcg(w.pM + s);
  v.S1 = ldcg(w.pS1 + s);
  v.ST = ldcg(w.pST + s);
  v.cut = cut != nullptr ? ldcg(cut + s) : neg_inf<acc_t>();  // written in launch 1
  v.amax = ldcg(w.pamax + s);
  return v;
}

// ---- stats --------------------------------------------------------------------------------------------

template <typename acc_t>
struct ChunkStats {
  acc_t m;
  double s1, sT;
  int64_t amax;
  int bad;
};

// One chunk [lo, hi) of one position, by the whole block: running max with rescaled sums per thread (one exp
// per entry, two when T is neither 0 nor 1), then a block merge. `sums` false: max, argmax and flags only.
// sT sums every entry: a position whose filter cuts gets its sum over the kept entries in filter_position.
template <typename in_t, typename acc_t>
__device__ __forceinline__ ChunkStats<acc_t> chunk_stats(const in_t* z, int64_t lo, int64_t hi, acc_t temp,
                                                         acc_t inv_t, bool sums) {
  __shared__ acc_t sh_v[kWarps];
  __shared__ int64_t sh_i[kWarps];
  __shared__ double sh_d[kWarps];
  const bool vec = vec_aligned(z);
  const bool scaled = sums && temp > acc_t(0) && is_finite(temp);  // sT is read
  const bool unit = temp == acc_t(1);
  acc_t m = neg_inf<acc_t>(), s1 = 0, sT = 0;
  int64_t am = kNoIndex;
  int bad = 0;
  const auto take = [&](const Group4<in_t, acc_t>& g, int64_t v0) {
    acc_t gm = neg_inf<acc_t>();
    int ga = 4;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const acc_t x = g.get(j);
      bad |= (v0 + j < hi) & ((x != x) | (x == static_cast<acc_t>(INFINITY)));
      if (x > gm) {
        gm = x;
        ga = j;
      }
    }
    if (gm > m) {
      if (sums && m > neg_inf<acc_t>()) {
        s1 *= dexp(m - gm);
        if (scaled) sT *= unit ? dexp(m - gm) : dexp(mul_rn(m - gm, inv_t));
      }
      m = gm;
      am = v0 + ga;
    }
    if (sums && m > neg_inf<acc_t>()) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const acc_t x = g.get(j);  // -inf beyond hi: adds 0
        const acc_t e1 = dexp(x - m);
        s1 += e1;
        if (scaled) sT += unit ? e1 : dexp(mul_rn(x - m, inv_t));
      }
    }
  };
  constexpr int U = kGroupsInFlight<in_t>;
  constexpr int64_t step = 4 * kThreads;
  for (int64_t v0 = lo + 4 * static_cast<int64_t>(threadIdx.x); v0 < hi; v0 += U * step) {
    Group4<in_t, acc_t> g[U];
#pragma unroll
    for (int u = 0; u < U; ++u) g[u] = load4<in_t, acc_t>(z, v0 + u * step, hi, vec);
#pragma unroll
    for (int u = 0; u < U; ++u) take(g[u], v0 + u * step);  // in increasing v: the first argmax stays
  }
  acc_t mb = m;
  int64_t ab = am;
  block_argmax(mb, ab, sh_v, sh_i);
  bad = __syncthreads_or(bad);
  double d1 = 0.0, dT = 0.0;
  if (sums) {
    const bool live = m > neg_inf<acc_t>() && mb > neg_inf<acc_t>();
    const acc_t f1 = live ? dexp(m - mb) : acc_t(0);
    const acc_t fT = live ? (unit ? f1 : dexp(mul_rn(m - mb, inv_t))) : acc_t(0);
    d1 = block_sum(static_cast<double>(s1 * f1), sh_d);
    dT = scaled ? block_sum(static_cast<double>(sT * fT), sh_d) : 0.0;
  }
  return ChunkStats<acc_t>{mb, d1, dT, ab, bad};
}

// merge: one warp combines position s's chunk records (lanes over chunks): the max, the sums rescaled to it (in
// double), the lowest argmax; a position with NaN / +inf or only -inf is bad.
template <typename acc_t>
__device__ __forceinline__ void merge_position(const Work<acc_t>& w, int64_t s, acc_t temp, acc_t inv_t) {
  const int lane = threadIdx.x & 31;
  const int64_t base = s * w.nch;
  acc_t M = neg_inf<acc_t>();
  int bad = 0;
  for (int64_t c = lane; c < w.nch; c += 32) {
    const acc_t mc = ldcg(w.cmax + base + c);
    M = mc > M ? mc : M;
    bad |= ldcg(w.cbad + base + c);
  }
  M = warp_max(M);
  bad = __any_sync(kFull, bad) || M == neg_inf<acc_t>();
  double s1 = 0.0, sT = 0.0;
  int64_t am = kNoIndex;
  if (!bad) {
    const double it = static_cast<double>(inv_t);
    for (int64_t c = lane; c < w.nch; c += 32) {
      const acc_t mc = ldcg(w.cmax + base + c);
      if (mc == neg_inf<acc_t>()) continue;
      const double d = static_cast<double>(mc) - static_cast<double>(M);
      s1 += ldcg(w.cs1 + base + c) * exp(d);
      sT += ldcg(w.csT + base + c) * exp(d * it);
      if (mc == M) {
        const int64_t a = ldcg(w.camax + base + c);
        am = a < am ? a : am;
      }
    }
    s1 = warp_sum(s1);
    sT = warp_sum(sT);
    am = warp_min(am);
  }
  if (lane == 0) {
    w.pM[s] = M;
    w.pS1[s] = static_cast<acc_t>(s1);
    w.pST[s] = temp > acc_t(0) ? static_cast<acc_t>(sT) : static_cast<acc_t>(s1);
    w.pamax[s] = am;
    w.pbad[s] = bad;
  }
}

// ---- the decisions --------------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ T at_most(T v, T hi) {
  return v > hi ? hi : v;
}

template <typename acc_t>
struct Decision {
  acc_t a;        // acceptance probability of the draft
  acc_t w;        // family A: the blend weight r; family B: eta (0 where unread)
  bool deferred;  // SPEC.md section 6
  bool known;     // false: TV or eta is still to be summed (second look)
};

// SPEC.md section 3 at draft position (b, i), from the merged statistics, two (at T = 0 for token sets four)
// logits, and the second look's sum when there is one. The formulas are rules.h's.
template <typename in_t, typename acc_t>
__device__ __forceinline__ Decision<acc_t> decide(const Work<acc_t>& w, const Round<in_t, acc_t>& r, int64_t b,
                                                  int64_t i, acc_t temp, acc_t inv_t, acc_t al, bool have_look,
                                                  acc_t look) {
  const RuleArgs R = r.rule;
  const int64_t x = r.x_at(b, i);
  const bool x_ok = x >= 0 && x < r.V;
  const PosView<acc_t> sp = pos_view(w, r.cut, r.pslot(b, i));
  const in_t* zp_row = r.p_row(b, i);
  const acc_t zpx = x_ok ? load1<in_t, acc_t>(zp_row, x) : acc_t(0);
  const acc_t px = x_ok ? sample_prob(zpx, x, sp, temp, inv_t) : acc_t(0);
  const acc_t max_ph = div_rn(acc_t(1), sp.S1);
  const bool token = !r.has_q();
  PosView<acc_t> sq{};
  const in_t* zq_row = nullptr;
  acc_t zqx = 0, qx, max_qh;
  if (token) {  // q one-hot at the draft (all zero for an id outside [0, V))
    qx = x_ok ? acc_t(1) : acc_t(0);
    max_qh = acc_t(1);
  } else {
    sq = pos_view(w, r.cut, r.qslot(b, i));
    zq_row = r.q_row(b, i);
    zqx = x_ok ? load1<in_t, acc_t>(zq_row, x) : acc_t(0);
    qx = x_ok ? sample_prob(zqx, x, sq, temp, inv_t) : acc_t(0);
    max_qh = div_rn(acc_t(1), sq.S1);
  }
  Decision<acc_t> d{acc_t(0), acc_t(0), false, true};
  switch (static_cast<FamilyCode>(R.family)) {
    case kFamilyA: {
      acc_t tv = 0;
      if (R.needs_tv) {
        if (temp == acc_t(0)) {  // one-hot q and p: TV is 0 or 1
          const int64_t aq = token ? x : sq.amax;
          tv = aq == sp.amax ? acc_t(0) : acc_t(1);
        } else if (have_look) {
          tv = look;
        } else {
          d.known = false;
          return d;
        }
      }
      d.w = blend_weight(R.code, al, max_qh, max_ph, tv);
      d.deferred = d.w > acc_t(0);
      d.a = x_ok ? acceptance(R.family, al, d.w, false, qx, px) : acc_t(0);
      break;
    }
    case kFamilyB: {
      acc_t qh = 0, ph = 0;
      if (x_ok) {
        if (R.reads_qh) qh = token ? acc_t(1) : unscaled_prob(zqx, sq);
        if (R.reads_ph) ph = unscaled_prob(zpx, sp);
      }
      const bool in_x = x_ok && in_token_set(R.code, al, qh, ph, max_ph);
      d.deferred = !in_x;
      if (in_x && qx > acc_t(0)) {  // accepted for sure: eta is never read here
        d.a = acc_t(1);
        break;
      }
      acc_t eta;
      if (token) {
        eta = x_ok && !in_x ? acc_t(1) : acc_t(0);
      } else if (temp == acc_t(0)) {  // q one-hot at its argmax
        const int64_t aq = sq.amax;
        const acc_t qa = R.reads_qh ? unscaled_prob(load1<in_t, acc_t>(zq_row, aq), sq) : acc_t(0);
        const acc_t pa = R.reads_ph ? unscaled_prob(load1<in_t, acc_t>(zp_row, aq), sp) : acc_t(0);
        eta = in_token_set(R.code, al, qa, pa, max_ph) ? acc_t(0) : acc_t(1);
      } else if (have_look) {
        eta = look;
      } else {
        d.known = false;
        return d;
      }
      d.w = eta;
      d.a = x_ok ? acceptance(R.family, al, eta, in_x, qx, px) : acc_t(0);
      break;
    }
    case kFamilyLossy:
      d.deferred = true;
      d.a = x_ok ? acceptance(R.family, al, acc_t(0), false, qx, px) : acc_t(0);
      break;
  }
  return d;
}

// divergence (SPEC.md section 6, only when asked) at used position (b, i) of a valid row, once its decision is final
// (wt: its weight r for family A, eta for family B). Where q is one-hot (T = 0: at q's argmax, whatever the draft; a
// token-only draft; none for one outside [0, V), where q = 0, the law is p and both are 0) in closed form: only q's
// one entry can exceed p, so TV(q, p) = 1 - p(hot), and the law's TV is (1 - w) TV(q, p) for family A and B (B: eta
// is 0 when hot is in A, the law is q; else 1, the law is p), for lossy max(0, min(1, p(hot) / (1 - alpha)) -
// p(hot)). Otherwise from the second look's sums (look: family A TV(q, p), family B eta, lossy TV(q, p); look2: family
// B TV(q, p), lossy sum_v max(0, min(q, p / (1 - alpha)) - p)): family A (1 - r) TV(q, p) (pi - p = (1 - r)(q - p)),
// lossy look2 (the proof is csrc/verify_cpu.cpp's), and family B's law, which needs eta first, later (law_item).
// Returns false where the law is left to law_item.
template <typename in_t, typename acc_t>
__device__ __forceinline__ bool position_divergences(const Work<acc_t>& w, const Round<in_t, acc_t>& r, int64_t b,
                                                     int64_t i, acc_t temp, acc_t inv_t, acc_t al, acc_t wt,
                                                     acc_t& draft, acc_t& law) {
  const RuleArgs R = r.rule;
  const int64_t k = b * r.K + i;
  draft = law = acc_t(0);
  if (!r.has_q() || temp == acc_t(0)) {
    int64_t hot;
    if (r.has_q()) {
      hot = ldcg(w.pamax + r.qslot(b, i));
    } else {
      const int64_t x = r.x_at(b, i);
      hot = x >= 0 && x < r.V ? x : -1;
    }
    if (hot < 0) return true;
    const PosView<acc_t> sp = pos_view(w, r.cut, r.pslot(b, i));
    const acc_t ph = sample_prob(load1<in_t, acc_t>(r.p_row(b, i), hot), hot, sp, temp, inv_t);
    draft = acc_t(1) - ph;
    if (R.family == kFamilyLossy) {
      const acc_t c = at_most(div_rn(ph, acc_t(1) - al), acc_t(1));
      law = c > ph ? c - ph : acc_t(0);
    } else {
      law = mul_rn(acc_t(1) - wt, draft);
    }
    return true;
  }
  switch (static_cast<FamilyCode>(R.family)) {
    case kFamilyA:
      draft = ldcg(w.look + k);
      law = mul_rn(acc_t(1) - wt, draft);
      return true;
    case kFamilyB:
      draft = ldcg(w.look2 + k);
      return false;
    case kFamilyLossy:
      draft = ldcg(w.look + k);
      law = ldcg(w.look2 + k);
      return true;
  }
  SPECCAS_UNREACHABLE();
  return true;
}

// An invalid row (SPEC.md section 4): emits nothing (divergences 0).
template <bool kDiv, typename in_t, typename acc_t>
__device__ __forceinline__ void write_invalid_row(const Outs& o, const Work<acc_t>& w, const Round<in_t, acc_t>& r,
                                                  int64_t b, bool second) {
  const int lane = threadIdx.x & 31;
  const int64_t K = r.K;
  for (int64_t i = lane; i <= K; i += 32) o.tokens[b * (K + 1) + i] = -1;
  for (int64_t i = lane; i < K; i += 32) {
    o.deferred[b * K + i] = false;
    o.accept_prob[b * K + i] = 0.f;
    if (!second) w.need[b * K + i] = 0;
    if constexpr (kDiv) {
      o.div[b * K + i] = 0.f;
      o.draft_div[b * K + i] = 0.f;
    }
  }
  if (lane == 0) {
    o.num_accepted[b] = 0;
    o.valid[b] = false;
    w.state[b] = kStateNoRace;
  }
}

// merge + accept for row b, by one warp (lanes over draft positions): validity (launch 1), the decisions, the
// accept loop u_i < a_i by ballot, the outputs, and what launch 2 is to do (second look, race, or nothing).
// kDiv (the divergences asked): every used position of a row at T > 0 with drafter logits takes the second look
// (its sums serve the divergence; a decision that does not read them decides as without), and the row's final call
// writes both divergences (position_divergences), but family B's law at those positions (law_item).
template <bool kDiv, typename in_t, typename acc_t>
__device__ __forceinline__ void finalize_row(const Outs& o, const Work<acc_t>& w, const Round<in_t, acc_t>& r,
                                             int64_t b, bool second) {
  const int lane = threadIdx.x & 31;
  const int64_t K = r.K, n = r.drafts(b);
  const RuleArgs R = r.rule;
  const acc_t temp = r.T.at(b), alpha = r.alpha.at(b);
  const acc_t inv_t = inv_temperature(temp);
  const acc_t al = R.uses_alpha ? alpha : acc_t(0);
  if (!second) {  // a pending row is valid: launch 2 does not ask again
    const acc_t tp = r.top_p.at(b), mp = r.min_p.at(b);
    bool ok = is_finite(temp) && temp >= acc_t(0) && alpha_ok(R, alpha) && r.top_k.at(b) >= 0 && tp > acc_t(0) &&
              tp <= acc_t(1) && mp >= acc_t(0) && mp <= acc_t(1);
    int bad = 0;
    for (int64_t i = lane; i <= n; i += 32) {
      bad |= ldcg(w.pbad + r.pslot(b, i));
      if (r.has_q() && i < n) bad |= ldcg(w.pbad + r.qslot(b, i));
    }
    ok = ok && !__any_sync(kFull, bad);
    if (!ok) {
      write_invalid_row<kDiv>(o, w, r, b, false);
      return;
    }
  }
  const int64_t seed = r.seed.at(b), off = r.offset.at(b);
  // kDiv: the row's second look covers every used position (none at T = 0 or with token-only drafts)
  const bool look_all = kDiv && !second && r.has_q() && temp > acc_t(0) && n > 0;
  const bool final_call = !look_all;  // (when no position is unknown) the divergences are written in this call
  int64_t m = n;
  acc_t wm = 0;
  unsigned pending = 0;
  for (int64_t g0 = 0; g0 < K; g0 += 32) {
    const int64_t i = g0 + lane, k = b * K + i;
    const bool slot = i < K, used = i < n;
    bool have = false;
    acc_t look = 0;
    if (second && used && w.need[k] != 0) {
      have = true;
      look = w.look[k];
    }
    Decision<acc_t> d{acc_t(0), acc_t(0), false, true};
    if (used) d = decide(w, r, b, i, temp, inv_t, al, have, look);
    const bool unknown = used && !d.known;
    const bool look_here = unknown || (look_all && used);
    if (!second && slot) w.need[k] = look_here ? 1 : 0;
    pending += __popc(__ballot_sync(kFull, look_here));
    if (slot) {
      o.deferred[k] = used && d.deferred;
      o.accept_prob[k] = used ? static_cast<float>(d.a) : 0.f;
    }
    if constexpr (kDiv) {
      if (slot && final_call) {
        acc_t dd = 0, dl = 0;
        const bool law_now = !used || position_divergences(w, r, b, i, temp, inv_t, al, d.w, dd, dl);
        o.draft_div[k] = static_cast<float>(at_most(dd, acc_t(1)));
        if (law_now) o.div[k] = static_cast<float>(at_most(dl, acc_t(1)));
      }
    }
    const acc_t u = used ? static_cast<acc_t>(uniform_at(seed, off + i, kStreamAccept)) : acc_t(0);
    const unsigned rej = __ballot_sync(kFull, used && d.known && !(u < d.a));
    const acc_t wl = __shfl_sync(kFull, d.w, rej != 0 ? __ffs(rej) - 1 : 0);
    if (m == n && rej != 0) {
      m = g0 + __ffs(rej) - 1;
      wm = wl;
    }
  }
  if (pending != 0) {  // launch 1 only: launch 2 sums TV / eta, then comes back here
    if (lane == 0) {
      w.needed[b] = pending;
      w.state[b] = kStatePending;
    }
    return;
  }
  const bool bonus = m == n;
  const bool greedy_bonus = bonus && temp == acc_t(0);
  for (int64_t i = lane; i <= K; i += 32) {
    int64_t tok = -1;
    if (i < m) {
      tok = r.x_at(b, i);
    } else if (i == m && greedy_bonus) {
      tok = ldcg(w.pamax + r.pslot(b, n));
    }
    o.tokens[b * (K + 1) + i] = tok;  // the race's token at m comes later
  }
  if (lane == 0) {
    const int kind = bonus ? (greedy_bonus ? kRaceNone : kRaceBonus)
                           : (residual_is_empty(R.family, wm) ? kRacePi : kRaceResidual);
    o.num_accepted[b] = m;
    o.valid[b] = true;
    w.kind[b] = kind;
    w.m[b] = m;
    w.w[b] = wm;
    __threadfence();
    st_release(w.state + b, kind == kRaceNone ? kStateNoRace : kStateReady);
  }
}

// ---- launch 1: stats, merge, accept -----------------------------------------------------------------------

// filter: position s (row b) after its merge, by the whole block: the cutoff of the row's filters (cuda_cutoff.cuh,
// the row from L2) and, where the sampling sum is read, ST over the kept entries. cut = -inf where nothing is cut.
template <typename in_t, typename acc_t>
__device__ __forceinline__ void filter_position(const Work<acc_t>& w, const Round<in_t, acc_t>& r, const in_t* z,
                                                int64_t s, int64_t b, bool sums) {
  __shared__ double sh_d[kWarps];
  __syncthreads();  // the merge (warp 0) wrote pM, pbad
  const RowFilters<acc_t> f{r.T.at(b), r.top_p.at(b), r.min_p.at(b), r.top_k.at(b)};
  const acc_t M = ldcg(w.pM + s);
  if (!f.cuts(r.V) || ldcg(w.pbad + s) != 0) {  // block-uniform
    if (threadIdx.x == 0) r.cut[s] = neg_inf<acc_t>();
    return;
  }
  const acc_t c = position_cutoff<in_t, acc_t, kThreads>(z, r.V, M, f);
  if (sums) {
    const acc_t inv_t = inv_temperature(f.T);
    const bool vec = vec_aligned(z);
    acc_t sT = 0;
    for (int64_t v0 = 4 * static_cast<int64_t>(threadIdx.x); v0 < r.V; v0 += 4 * kThreads) {
      const Group4<in_t, acc_t> g = load4<in_t, acc_t>(z, v0, r.V, vec);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const acc_t x = g.get(j);  // -inf beyond V: not kept
        if (x >= c) sT += dexp(mul_rn(x - M, inv_t));
      }
    }
    const double total = block_sum(static_cast<double>(sT), sh_d);
    if (threadIdx.x == 0) w.pST[s] = static_cast<acc_t>(total);
  }
  if (threadIdx.x == 0) r.cut[s] = c;
}

// Blocks per SM the stats kernel is compiled for (registers <= 65536 / (blocks * kThreads)), each the most that
// compiles without spills for sm_90: without filters 4 (64 registers) in float, 3 (80) in double; with filters 2
// (128: the cutoff's radix passes spilled at 80).
template <typename acc_t, bool kFilter>
constexpr int stats_min_blocks() {
  return kFilter ? 2 : (sizeof(acc_t) == 8 ? 3 : 4);
}

// kFilter: some row may filter (Round::cut is set); the last chunk block of a position then runs filter_position.
// kDiv: the divergences are asked (finalize_row).
template <typename in_t, typename acc_t, bool kFilter, bool kDiv>
__global__ void __launch_bounds__(kThreads, stats_min_blocks<acc_t, kFilter>()) _verify_stats_kernel(Outs o, Work<acc_t> w, Round<in_t, acc_t> r) {
  const int64_t item = blockIdx.x;
  int64_t s = 0, c = 0;
  split_item(item, w.nch, s, c);
  int64_t b = 0, i = 0;
  const bool is_q = r.locate(s, b, i);
  const int64_t n = r.drafts(b);
  if (is_q ? i >= n : i > n) return;  // not read this round (block-uniform)
  const in_t* z = is_q ? r.q_row(b, i) : r.p_row(b, i);
  const acc_t temp = r.T.at(b), inv_t = inv_temperature(temp);
  const int64_t lo = c * w.csz, hi = lo + w.csz < r.V ? lo + w.csz : r.V;
  const bool sums = is_q || i < n;  // the bonus position's sums are never read
  const ChunkStats<acc_t> st = chunk_stats<in_t, acc_t>(z, lo, hi, temp, inv_t, sums);
  if (threadIdx.x == 0) {
    w.cmax[item] = st.m;
    w.cs1[item] = st.s1;
    w.csT[item] = st.sT;
    w.camax[item] = st.amax;
    w.cbad[item] = st.bad;
  }
  if (!arrive_last(w.pos_ticket + s, static_cast<unsigned>(w.nch))) return;
  if (threadIdx.x < 32) merge_position(w, s, temp, inv_t);
  if constexpr (kFilter) filter_position(w, r, z, s, b, sums);
  const unsigned positions = static_cast<unsigned>((r.has_q() ? n : 0) + n + 1);
  if (!arrive_last(w.row_ticket + b, positions)) return;
  if (threadIdx.x < 32) finalize_row<kDiv>(o, w, r, b, false);
}

// ---- launch 2: second look, accept, race, emit -------------------------------------------------------------

// The last block of a row's chunked pass over its marked positions (second look, law items), warp 0: one position
// at a time, lanes over its chunks' partial sums `part` ([B K nch2], in double), in a fixed order; lane 0 hands
// each position's total to put(k, total).
template <typename in_t, typename acc_t, typename Put>
__device__ __forceinline__ void merge_row_sums(const Work<acc_t>& w, const Round<in_t, acc_t>& r, int64_t b,
                                               const double* part, const Put& put) {
  const int lane = threadIdx.x & 31;
  const int64_t n = r.drafts(b);
  for (int64_t ii = 0; ii < n; ++ii) {
    const int64_t kk = b * r.K + ii;
    if (w.need[kk] == 0) continue;
    double s = 0.0;
    for (int64_t cc = lane; cc < w.nch2; cc += 32) s += ldcg(part + kk * w.nch2 + cc);
    s = warp_sum(s);
    if (lane == 0) put(kk, s);
  }
}

// kDiv: a second sum beside the first (family B: TV(q, p) beside eta; lossy, which decides without a second look:
// TV(q, p) and sum_v max(0, min(q, p / (1 - alpha)) - p)), merged into look2. The first sum is computed as without
// kDiv, chunk for chunk: the decisions that read it get the same bits.
template <bool kDiv, typename in_t, typename acc_t>
__device__ __forceinline__ void second_look(const Outs& o, const Work<acc_t>& w, const Round<in_t, acc_t>& r,
                                            int64_t item) {
  __shared__ double sh_d[kWarps];
  int64_t k = 0, c = 0;
  split_item(item, w.nch2, k, c);
  if (w.need[k] == 0) return;  // block-uniform
  int64_t b = 0, i = 0;
  split_item(k, r.K, b, i);
  const RuleArgs R = r.rule;
  const acc_t temp = r.T.at(b), inv_t = inv_temperature(temp);
  const acc_t al = R.uses_alpha ? r.alpha.at(b) : acc_t(0);
  const PosView<acc_t> sq = pos_view(w, r.cut, r.qslot(b, i));
  const PosView<acc_t> sp = pos_view(w, r.cut, r.pslot(b, i));
  const in_t* zq_row = r.q_row(b, i);
  const in_t* zp_row = r.p_row(b, i);
  const bool lossy = kDiv && R.family == kFamilyLossy;
  const bool tv = R.family == kFamilyA || lossy;  // else eta of a token set
  const bool read_p = kDiv || tv || R.reads_ph;
  const bool vq = vec_aligned(zq_row), vp = vec_aligned(zp_row);
  const acc_t max_ph = div_rn(acc_t(1), sp.S1);
  const acc_t keep = acc_t(1) - al;  // lossy
  const int64_t lo = c * w.csz2, hi = lo + w.csz2 < r.V ? lo + w.csz2 : r.V;
  acc_t sum = 0, sum2 = 0;
  for (int64_t v0 = lo + 4 * static_cast<int64_t>(threadIdx.x); v0 < hi; v0 += 4 * kThreads) {
    const Group4<in_t, acc_t> gq = load4<in_t, acc_t>(zq_row, v0, hi, vq);
    const Group4<in_t, acc_t> gp = read_p ? load4<in_t, acc_t>(zp_row, v0, hi, vp) : gq;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t v = v0 + j;
      if (v >= hi) break;
      const acc_t zq = gq.get(j), zp = gp.get(j);
      const acc_t q = sample_prob(zq, v, sq, temp, inv_t);
      if (tv) {
        const acc_t p = sample_prob(zp, v, sp, temp, inv_t);
        const acc_t dq = q - p;
        sum += dq > acc_t(0) ? dq : acc_t(0);
        if constexpr (kDiv) {
          if (lossy) {
            const acc_t dc = (q < div_rn(p, keep) ? q : div_rn(p, keep)) - p;
            sum2 += dc > acc_t(0) ? dc : acc_t(0);
          }
        }
      } else {
        const acc_t qh = R.reads_qh ? unscaled_prob(zq, sq) : acc_t(0);
        const acc_t ph = R.reads_ph ? unscaled_prob(zp, sp) : acc_t(0);
        sum += in_token_set(R.code, al, qh, ph, max_ph) ? acc_t(0) : q;
        if constexpr (kDiv) {
          const acc_t dq = q - sample_prob(zp, v, sp, temp, inv_t);
          sum2 += dq > acc_t(0) ? dq : acc_t(0);
        }
      }
    }
  }
  const double total = block_sum(static_cast<double>(sum), sh_d);
  if (threadIdx.x == 0) w.lsum[item] = total;
  if constexpr (kDiv) {
    const double total2 = block_sum(static_cast<double>(sum2), sh_d);
    if (threadIdx.x == 0) w.lsum2[item] = total2;
  }
  if (!arrive_last(w.look_ticket + b, w.needed[b] * static_cast<unsigned>(w.nch2))) return;
  if (threadIdx.x >= 32) return;
  merge_row_sums(w, r, b, w.lsum, [&](int64_t kk, double s) { w.look[kk] = static_cast<acc_t>(s); });
  if constexpr (kDiv) {
    merge_row_sums(w, r, b, w.lsum2, [&](int64_t kk, double s) { w.look2[kk] = static_cast<acc_t>(s); });
  }
  __syncwarp();
  finalize_row<kDiv>(o, w, r, b, true);
}

// Thread 0 waits while row b is pending (its second-look blocks started before the caller's: they finish); the
// row's state after, in every thread of the block.
template <typename acc_t>
__device__ __forceinline__ unsigned settled_state(const Work<acc_t>& w, int64_t b) {
  __shared__ unsigned s_state;
  if (threadIdx.x == 0) {
    unsigned st = ld_acquire(w.state + b);
    if (st == kStatePending) {
      const uint64_t t0 = global_ns();
      do {
        __nanosleep(256);
        st = ld_acquire(w.state + b);
        if (st == kStatePending && global_ns() - t0 > kWaitLimitNs) __trap();
      } while (st == kStatePending);
    }
    s_state = st;
  }
  __syncthreads();
  return s_state;
}

// divergence, family B at T > 0 with drafter logits (kDiv): the law's TV sum_{v in A} max(0, q(v) - Q p(v)), Q = 1 -
// eta (pi - p = q - Q p on A and (eta - 1) p <= 0 off A), per marked (position, chunk) once the row's second look
// has merged eta; the last such block of the row (ticket) merges the chunks (one warp per position, lanes over
// chunks) and writes the divergence.
template <typename in_t, typename acc_t>
__device__ __forceinline__ void law_item(const Outs& o, const Work<acc_t>& w, const Round<in_t, acc_t>& r,
                                         int64_t item) {
  __shared__ double sh_d[kWarps];
  int64_t k = 0, c = 0;
  split_item(item, w.nch2, k, c);
  if (w.need[k] == 0) return;  // block-uniform (written in launch 1)
  int64_t b = 0, i = 0;
  split_item(k, r.K, b, i);
  settled_state(w, b);
  const RuleArgs R = r.rule;
  const acc_t temp = r.T.at(b), inv_t = inv_temperature(temp);
  const acc_t al = R.uses_alpha ? r.alpha.at(b) : acc_t(0);
  const PosView<acc_t> sq = pos_view(w, r.cut, r.qslot(b, i));
  const PosView<acc_t> sp = pos_view(w, r.cut, r.pslot(b, i));
  const acc_t Q = acc_t(1) - ldcg(w.look + k);
  const in_t* zq_row = r.q_row(b, i);
  const in_t* zp_row = r.p_row(b, i);
  const bool vq = vec_aligned(zq_row), vp = vec_aligned(zp_row);
  const acc_t max_ph = div_rn(acc_t(1), sp.S1);
  const int64_t lo = c * w.csz2, hi = lo + w.csz2 < r.V ? lo + w.csz2 : r.V;
  acc_t sum = 0;
  for (int64_t v0 = lo + 4 * static_cast<int64_t>(threadIdx.x); v0 < hi; v0 += 4 * kThreads) {
    const Group4<in_t, acc_t> gq = load4<in_t, acc_t>(zq_row, v0, hi, vq);
    const Group4<in_t, acc_t> gp = load4<in_t, acc_t>(zp_row, v0, hi, vp);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t v = v0 + j;
      if (v >= hi) break;
      const acc_t zq = gq.get(j), zp = gp.get(j);
      const acc_t qh = R.reads_qh ? unscaled_prob(zq, sq) : acc_t(0);
      const acc_t ph = R.reads_ph ? unscaled_prob(zp, sp) : acc_t(0);
      if (!in_token_set(R.code, al, qh, ph, max_ph)) continue;
      const acc_t e = sample_prob(zq, v, sq, temp, inv_t) - mul_rn(Q, sample_prob(zp, v, sp, temp, inv_t));
      sum += e > acc_t(0) ? e : acc_t(0);
    }
  }
  const double total = block_sum(static_cast<double>(sum), sh_d);
  if (threadIdx.x == 0) w.dsum[item] = total;
  if (!arrive_last(w.div_ticket + b, w.needed[b] * static_cast<unsigned>(w.nch2))) return;
  if (threadIdx.x >= 32) return;
  merge_row_sums(w, r, b, w.dsum, [&](int64_t kk, double s) {
    o.div[kk] = static_cast<float>(at_most(static_cast<acc_t>(s), acc_t(1)));
  });
}

template <typename in_t, typename acc_t>
__device__ __forceinline__ void race(const Outs& o, const Work<acc_t>& w, const Round<in_t, acc_t>& r, int64_t item) {
  __shared__ acc_t sh_v[kWarps];
  __shared__ int64_t sh_i[kWarps];
  __shared__ double sh_d[kWarps];
  int64_t b = 0, c = 0;
  split_item(item, w.rnch, b, c);
  if (settled_state(w, b) != kStateReady) return;  // block-uniform: the row emits nothing, or its token is written
  const RuleArgs R = r.rule;
  const int kind = ldcg(w.kind + b);
  const int64_t m = ldcg(w.m + b);
  const acc_t wm = ldcg(w.w + b);
  const bool bonus = kind == kRaceBonus, pi_only = kind == kRacePi;
  const int64_t pos = m;  // the bonus is raced at n = m
  const acc_t temp = r.T.at(b), inv_t = inv_temperature(temp);
  const acc_t al = R.uses_alpha ? r.alpha.at(b) : acc_t(0);
  const int64_t seed = r.seed.at(b), gpos = r.offset.at(b) + pos;
  const PosView<acc_t> sp = pos_view(w, r.cut, r.pslot(b, pos));
  const in_t* zp_row = r.p_row(b, pos);
  const bool has_q = r.has_q(), read_q = has_q && !bonus;
  PosView<acc_t> sq{};
  const in_t* zq_row = zp_row;
  if (read_q) {
    sq = pos_view(w, r.cut, r.qslot(b, pos));
    zq_row = r.q_row(b, pos);
  }
  const int64_t x = !has_q && !bonus ? r.x_at(b, pos) : -1;
  const bool x_ok = x >= 0 && x < r.V;
  const bool pi_is_p = !has_q && !x_ok;  // a token-only draft outside [0, V): the position emits from p
  const acc_t max_ph = bonus ? acc_t(0) : div_rn(acc_t(1), sp.S1);
  const bool vq = vec_aligned(zq_row), vp = vec_aligned(zp_row);
  const int64_t lo = c * w.rcsz, hi = lo + w.rcsz < r.V ? lo + w.rcsz : r.V;
  acc_t bw = neg_inf<acc_t>(), bp = neg_inf<acc_t>(), mass = 0;
  int64_t iw = kNoIndex, ip = kNoIndex;
  for (int64_t v0 = lo + 4 * static_cast<int64_t>(threadIdx.x); v0 < hi; v0 += 4 * kThreads) {
    const Philox4 rnd = philox_group(seed, gpos, kStreamEmit, v0 >> 2);
    const Group4<in_t, acc_t> gp = load4<in_t, acc_t>(zp_row, v0, hi, vp);
    const Group4<in_t, acc_t> gq = read_q ? load4<in_t, acc_t>(zq_row, v0, hi, vq) : gp;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t v = v0 + j;
      if (v >= hi) break;
      const acc_t g = static_cast<acc_t>(bits_to_gumbel(rnd.w[j]));
      const acc_t zp = gp.get(j);
      if (bonus) {  // s_n + G over p_n's kept entries
        const acc_t s = zp >= sp.cut ? mul_rn(zp - sp.M, inv_t) + g : neg_inf<acc_t>();
        take_if_better(bw, iw, s, v);
        continue;
      }
      const acc_t zq = gq.get(j);
      const acc_t p = sample_prob(zp, v, sp, temp, inv_t);
      const acc_t q = has_q ? sample_prob(zq, v, sq, temp, inv_t) : (v == x ? acc_t(1) : acc_t(0));
      acc_t pi = p;
      if (!pi_is_p) {
        bool in_a = false;
        if (R.family == kFamilyB) {
          const acc_t qh = R.reads_qh ? (has_q ? unscaled_prob(zq, sq) : q) : acc_t(0);
          const acc_t ph = R.reads_ph ? unscaled_prob(zp, sp) : acc_t(0);
          in_a = in_token_set(R.code, al, qh, ph, max_ph);
        }
        pi = blended(R.family, wm, in_a, q, p);
      }
      take_if_better(bp, ip, dlog(pi) + g, v);
      if (!pi_only) {
        const acc_t dw = pi - q;
        const acc_t wv = dw > acc_t(0) ? dw : acc_t(0);
        mass += wv;
        take_if_better(bw, iw, dlog(wv) + g, v);
      }
    }
  }
  block_argmax(bw, iw, sh_v, sh_i);
  if (!bonus) block_argmax(bp, ip, sh_v, sh_i);
  const double dmass = pi_only || bonus ? 0.0 : block_sum(static_cast<double>(mass), sh_d);
  if (threadIdx.x == 0) {
    w.rbest[item] = bw;
    w.ridx[item] = iw;
    w.rbest_pi[item] = bp;
    w.ridx_pi[item] = ip;
    w.rmass[item] = dmass;
  }
  if (!arrive_last(w.race_ticket + b, static_cast<unsigned>(w.rnch))) return;
  if (threadIdx.x >= 32) return;
  // emit: one warp merges the row's chunks (lanes over chunks; ties to the lowest index).
  const int lane = threadIdx.x;
  const int64_t base = b * w.rnch;
  acc_t Bw = neg_inf<acc_t>(), Bp = neg_inf<acc_t>();
  int64_t Iw = kNoIndex, Ip = kNoIndex;
  double M = 0.0;
  for (int64_t cc = lane; cc < w.rnch; cc += 32) {
    take_if_better(Bw, Iw, ldcg(w.rbest + base + cc), ldcg(w.ridx + base + cc));
    take_if_better(Bp, Ip, ldcg(w.rbest_pi + base + cc), ldcg(w.ridx_pi + base + cc));
    M += ldcg(w.rmass + base + cc);
  }
  warp_argmax(Bw, Iw);
  warp_argmax(Bp, Ip);
  M = warp_sum(M);
  if (lane == 0) {
    const bool residual = !bonus && !pi_only && M > residual_eps<acc_t>();
    int64_t e = bonus || residual ? Iw : Ip;
    e = e < 0 ? 0 : (e >= r.V ? r.V - 1 : e);
    o.tokens[b * (r.K + 1) + m] = e;
  }
}

// kDiv: the divergences are asked: the second look's second sums, then the law items (token sets), then the race.
template <typename in_t, typename acc_t, bool kDiv>
__global__ void __launch_bounds__(kThreads, 1) _verify_race_kernel(Outs o, Work<acc_t> w, Round<in_t, acc_t> r) {
  __shared__ int64_t s_item;
  if (threadIdx.x == 0) {  // the work counter: numbers in the order blocks start
    const int64_t item = atomicAdd(w.ids, 1u);
    if (item + 1 == w.items2) atomicExch(w.ids, 0u);
    s_item = item;
  }
  __syncthreads();
  const int64_t item = s_item;
  if (item < w.looks) {
    second_look<kDiv>(o, w, r, item);
  } else if (item < w.looks + w.laws) {  // (none without kDiv)
    if constexpr (kDiv) law_item(o, w, r, item - w.looks);
  } else {
    race(o, w, r, item - w.looks - w.laws);
  }
}

// ---- launcher -------------------------------------------------------------------------------------------

// div, draft_div: [B, K] float32 outputs when the divergences are asked (kDiv), else undefined.
template <typename in_t, typename acc_t, bool kDiv>
void verify_cuda_impl(const VerifyInputs& in, const VerifyResult& out, const at::Tensor& div,
                      const at::Tensor& draft_div) {
  const int64_t B = in.B, K = in.K, V = in.V;
  const bool has_q = !in.token_drafts();
  const int64_t QS = has_q ? B * K : 0;
  const int64_t P = QS + B * (K + 1);
  const at::Device device = in.zp.device();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;

  Round<in_t, acc_t> r{};
  r.zq = has_q ? in.zq.data_ptr<in_t>() : nullptr;
  r.zp = in.zp.data_ptr<in_t>();
  r.x = in.x.data_ptr<int64_t>();
  r.cu = in.ragged() ? in.cu.data_ptr<int64_t>() : nullptr;
  r.n = row_arg<int64_t>(in.n);
  r.top_k = row_arg<int64_t>(in.top_k);
  r.seed = row_arg<int64_t>(in.seed);
  r.offset = row_arg<int64_t>(in.offset);
  r.T = row_arg<acc_t>(in.temperature);
  r.alpha = row_arg<acc_t>(in.alpha);
  r.top_p = row_arg<acc_t>(in.top_p);
  r.min_p = row_arg<acc_t>(in.min_p);
  r.B = B;
  r.K = K;
  r.V = V;
  r.N = in.ragged() ? in.x.size(0) : 0;
  r.QS = QS;
  r.sqB = in.sqB;
  r.sqL = in.sqL;
  r.spB = in.spB;
  r.spL = in.spL;
  r.rule = in.rule;
  r.hq = has_q;

  const int64_t target = 16 * sms;  // about two waves of blocks at full occupancy
  const Split s1 = plan_split(P, V, target, 2048);
  const Split s2 = plan_split(B * K > 0 ? B * K : 1, V, target, 2048);
  const Split s3 = plan_split(B, V, target, 1024);
  Work<acc_t> w{};
  w.csz = s1.csz;
  w.nch = s1.nch;
  w.csz2 = s2.csz;
  w.nch2 = s2.nch;
  w.rcsz = s3.csz;
  w.rnch = s3.nch;
  w.looks = B * K * w.nch2;
  w.laws = kDiv && has_q && in.rule.family == kFamilyB ? w.looks : 0;
  w.items2 = w.looks + w.laws + B * w.rnch;
  const int64_t items1 = P * w.nch;
  SPECCAS_CHECK(items1 < (1LL << 31) && w.items2 < (1LL << 31) && P < (1LL << 31),
                "the round is too large for one launch (", P, " positions of ", V, " entries)");

  acc_t* cut = nullptr;
  const at::Tensor scratch = carve_scratch(device, [&](Carver& cv) {
    w.cmax = cv.take<acc_t>(items1);
    w.cs1 = cv.take<double>(items1);
    w.csT = cv.take<double>(items1);
    w.camax = cv.take<int64_t>(items1);
    w.cbad = cv.take<int>(items1);
    w.pM = cv.take<acc_t>(P);
    w.pS1 = cv.take<acc_t>(P);
    w.pST = cv.take<acc_t>(P);
    w.pamax = cv.take<int64_t>(P);
    w.pbad = cv.take<int>(P);
    w.state = cv.take<unsigned>(B);
    w.kind = cv.take<int>(B);
    w.m = cv.take<int64_t>(B);
    w.w = cv.take<acc_t>(B);
    w.needed = cv.take<unsigned>(B);
    w.need = cv.take<unsigned char>(B * K);
    w.look = cv.take<acc_t>(B * K);
    w.lsum = cv.take<double>(w.looks);
    if (kDiv) {
      w.look2 = cv.take<acc_t>(B * K);
      w.lsum2 = cv.take<double>(w.looks);
      w.dsum = cv.take<double>(w.laws);
    }
    w.rbest = cv.take<acc_t>(B * w.rnch);
    w.ridx = cv.take<int64_t>(B * w.rnch);
    w.rbest_pi = cv.take<acc_t>(B * w.rnch);
    w.ridx_pi = cv.take<int64_t>(B * w.rnch);
    w.rmass = cv.take<double>(B * w.rnch);
    cut = in.filters ? cv.take<acc_t>(P) : nullptr;
  });
  unsigned* counters = ticket_counters(1 + P + (kDiv ? 4 : 3) * B, device, stream);
  w.ids = counters;
  w.pos_ticket = counters + 1;
  w.row_ticket = w.pos_ticket + P;
  w.look_ticket = w.row_ticket + B;
  w.race_ticket = w.look_ticket + B;
  w.div_ticket = kDiv ? w.race_ticket + B : nullptr;
  r.cut = cut;

  Outs o{std::get<0>(out).data_ptr<int64_t>(),
         std::get<1>(out).data_ptr<int64_t>(),
         std::get<2>(out).data_ptr<bool>(),
         std::get<3>(out).data_ptr<float>(),
         std::get<4>(out).data_ptr<bool>(),
         kDiv ? div.data_ptr<float>() : nullptr,
         kDiv ? draft_div.data_ptr<float>() : nullptr};

  if (in.filters) {
    launch(_verify_stats_kernel<in_t, acc_t, true, kDiv>, items1, kThreads, stream, o, w, r);
  } else {
    launch(_verify_stats_kernel<in_t, acc_t, false, kDiv>, items1, kThreads, stream, o, w, r);
  }
  launch(_verify_race_kernel<in_t, acc_t, kDiv>, w.items2, kThreads, stream, o, w, r);
}

// One round on checked inputs into `out`, and the divergences into div / draft_div when they are defined.
void run_verify(const VerifyInputs& in, const VerifyResult& out, const at::Tensor& div, const at::Tensor& draft_div) {
  if (in.B == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, in.zp.scalar_type(), "verify_native_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    if (div.defined()) {
      verify_cuda_impl<scalar_t, acc_t, true>(in, out, div, draft_div);
    } else {
      verify_cuda_impl<scalar_t, acc_t, false>(in, out, div, draft_div);
    }
  });
}

// The outputs, unfilled: the kernels write every element.
VerifyResult unfilled_outputs(const VerifyInputs& in, const at::TensorOptions& opts) {
  return VerifyResult{at::empty({in.B, in.K + 1}, opts.dtype(at::kLong)), at::empty({in.B}, opts.dtype(at::kLong)),
                      at::empty({in.B, in.K}, opts.dtype(at::kBool)), at::empty({in.B, in.K}, opts.dtype(at::kFloat)),
                      at::empty({in.B}, opts.dtype(at::kBool))};
}

VerifyResult verify_native_cuda(SPECCAS_VERIFY_PARAMS) {
  const c10::cuda::CUDAGuard guard(target_logits.device());  // before the checks, whose copies run on it
  const VerifyInputs in = SPECCAS_CHECK_VERIFY_INPUTS();
  const VerifyResult out = unfilled_outputs(in, target_logits.options());
  run_verify(in, out, at::Tensor(), at::Tensor());
  return out;
}

// verify_native and, from the same round, divergence and draft_divergence [B, K] float32 (SPEC.md section 6),
// written by the kernels (torch.empty, no fill).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
verify_divergence_native_cuda(SPECCAS_VERIFY_PARAMS) {
  const c10::cuda::CUDAGuard guard(target_logits.device());
  const VerifyInputs in = SPECCAS_CHECK_VERIFY_INPUTS();
  const auto opts = target_logits.options();
  const VerifyResult out = unfilled_outputs(in, opts);
  const at::Tensor div = at::empty({in.B, in.K}, opts.dtype(at::kFloat));
  const at::Tensor draft_div = at::empty({in.B, in.K}, opts.dtype(at::kFloat));
  run_verify(in, out, div, draft_div);
  return std::tuple_cat(out, std::make_tuple(div, draft_div));
}

}  // namespace
}  // namespace cuda
}  // namespace speccas

TORCH_LIBRARY_IMPL(speccas, CUDA, m) {
  m.impl("verify_native", &speccas::cuda::verify_native_cuda);
  m.impl("verify_divergence_native", &speccas::cuda::verify_divergence_native_cuda);
}
