// verify_native and verify_divergence_native on CPU: one verification round of SPEC.md sections 1-6, token for
// token the formulas of speccas_kernels/reference.py (which materializes every distribution; this does not).
//
// Row b, n = its number of drafts (num_draft_tokens[b], or cu[b + 1] - cu[b] in the ragged layout,
// clamped to [0, K]), T = temperature[b], inv_t = 1/T rounded and capped (reference.inv_temperature),
// in the phases every backend names the same way (SPEC.md section 9; the rule's formulas are csrc/rules.h,
// its row of rules.py arrives as RuleArgs):
//   row parameters: a row with T < 0 or NaN / inf, alpha outside the rule's range or a filter value out of
//      range is invalid: tokens -1, nothing else computed.
//   stats: parallel over (position, vocabulary chunk), for the n drafter positions (none for token-only
//      drafts: q is one-hot at the draft) and the n + 1 target positions: max z, the NaN / +inf / all -inf
//      flags (a bad position makes the row invalid), sum exp(z - max) (the unscaled, unfiltered q^, p^ the
//      rules read), sum exp((z - max) * inv_t) when no filter cuts the position, the first argmax (T = 0).
//      The bonus position needs only its max (and argmax).
//   filters: rows with a sampling filter at T > 0, one task per position: the cutoff c (keep z >= c) of
//      top-k / top-p / min-p, and the sampling sum over the kept entries (cpu_common.h filter_position).
//   merge: per drafted token x_i: q(x), p(x), the token set at x and the rule's decision where the merged
//      statistics suffice (T = 0 and token-only drafts have closed forms);
//   second look: a pass over V at the positions whose rule reads TV(q, p) or a token set's eta.
//   divergence (verify_divergence_native only): TV(q, p) and TV(law, p) at every verified position of the valid
//      rows (SPEC.md section 6): closed forms where q is one-hot, opt's TV(q, p) from the second look, else one
//      pass over V (divergences() and div_chunk: the formulas and the lossy proof). The token sets then take eta in
//      the second look at every position, not only where the draft is outside A (no decision changes).
//   accept: accept while u_i < a_i, u_i = uniform(seed, offset + i, STREAM_ACCEPT, 0); m leading acceptances.
//   race: one race over V at the one position needed, noise G = gumbel(seed, offset + m, STREAM_EMIT, v):
//      the bonus argmax_v (zp_n - M) * inv_t + G over p_n's kept entries (plain argmax at T = 0), or the
//      residual argmax log(w) + G with w = max(0, pi_m - q_m), and pi_m itself (a second race) when w's mass
//      is rounding noise; a token-only draft outside [0, V) races over p.
//   emit: the chunks of the race merged (ties to the lowest index), the outputs written.
// Layouts: padded [B, K(+1), V], or ragged (flat rows addressed through cu in place, no copy). Compute type:
// float32 for fp32/bf16/fp16 logits, float64 for fp64 logits (speccas.h converts mixed dtypes to one).
#include <vector>

#include "cpu_common.h"
#include "speccas.h"

namespace speccas {
namespace cpu {
namespace {

// Where row b's positions live: padded, or ragged with the offsets of cu, wrapping and clamped into the
// tensors exactly as reference.padded gathers them (cu is not checked without validate=True).
template <typename in_t>
struct Layout {
  const in_t* zq = nullptr;  // null: token-only drafts
  const in_t* zp = nullptr;
  const int64_t* x = nullptr;
  const int64_t* cu = nullptr;  // null: padded
  int64_t sqB = 0, sqL = 0, spB = 0, spL = 0, B = 0, K = 0, N = 0;  // N: drafts of the ragged layout
  Rows<int64_t> n;

  int64_t count(int64_t b) const {
    const int64_t nb = cu ? wrap_sub(cu[b + 1], cu[b]) : n[b];
    return clamp64(nb, 0, K);
  }
  int64_t flat(int64_t b, int64_t i) const { return N > 0 ? clamp64(wrap_add(cu[b], i), 0, N - 1) : 0; }
  const in_t* q(int64_t b, int64_t i) const { return cu ? zq + flat(b, i) * sqL : zq + b * sqB + i * sqL; }
  const in_t* p(int64_t b, int64_t i) const {
    return cu ? zp + clamp64(wrap_add(wrap_add(cu[b], b), i), 0, N + B - 1) * spL : zp + b * spB + i * spL;
  }
  int64_t draft(int64_t b, int64_t i) const {
    if (!cu) return x[b * K + i];
    return N > 0 ? x[flat(b, i)] : 0;
  }
};

enum RaceKind : int {
  kBonus = 0,  // the bonus: (zp_n - M) * inv_t + G over the kept entries
  kResidual,   // w = max(0, pi - q), with the race over pi as its fallback when w is rounding noise
  kPi,         // pi itself (family A with r = 0, where pi = q and the residual is empty by construction)
};

// One race over the vocabulary at one position of one row.
template <typename in_t, typename acc_t>
struct RaceJob {
  int kind = kBonus;
  bool pi_is_p = false;  // a token-only draft outside [0, V): q = 0, pi = p (reference: where(x_ok, pi, p))
  int64_t b = 0, seed = 0, pos = 0;
  const in_t* zq = nullptr;  // drafter logits at the race position (residual races; null for token-only drafts)
  const in_t* zp = nullptr;  // target logits at the race position
  PosStats<acc_t> sq, sp;
  acc_t alpha = 0, w = 0;  // w: family A the weight r, family B eta
};

// The drafter's logits of a block, or nothing for a token-only draft (its distributions never read them).
template <typename in_t, typename acc_t>
inline const acc_t* load_q(const in_t* zq, int64_t v0, int64_t n, acc_t* buf) {
  return zq ? load_block(zq + v0, n, buf) : nullptr;
}

// Unscaled probabilities of a block for the token set (only those the rule reads), and membership.
template <typename acc_t>
inline void token_set_block(const RuleArgs& R, const acc_t* zq, const acc_t* zp, int64_t n, int64_t v0,
                            const PosStats<acc_t>& sq, const PosStats<acc_t>& sp, acc_t alpha, acc_t* qh, acc_t* ph,
                            char* in_a) {
  const acc_t max_ph = max_unscaled(sp);
  if (R.reads_qh) unscaled_block(sq, zq, n, v0, qh);
  if (R.reads_ph) unscaled_block(sp, zp, n, v0, ph);
  for (int64_t i = 0; i < n; ++i) {
    in_a[i] = in_token_set(R.code, alpha, R.reads_qh ? qh[i] : acc_t(0), R.reads_ph ? ph[i] : acc_t(0), max_ph);
  }
}

// pi of a block from q, p (and the token set for family B), into `pi`.
template <typename acc_t>
inline void blended_block(int family, acc_t w, const char* in_a, const acc_t* q, const acc_t* p, int64_t n, acc_t* pi) {
  switch (static_cast<FamilyCode>(family)) {
    case kFamilyA:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) pi[i] = blended<acc_t>(kFamilyA, w, false, q[i], p[i]);
      return;
    case kFamilyB:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) pi[i] = blended<acc_t>(kFamilyB, w, in_a[i] != 0, q[i], p[i]);
      return;
    case kFamilyLossy:
      std::copy(p, p + n, pi);
      return;
  }
  SPECCAS_UNREACHABLE();
}

template <typename in_t, typename acc_t>
RacePair<acc_t> race_chunk(const RuleArgs& R, const RaceJob<in_t, acc_t>& job, int64_t lo, int64_t hi,
                           Scratch<acc_t>& sc) {
  RacePair<acc_t> r;
  if (job.kind == kBonus) {
    r.main = scaled_race_chunk(job.zp, job.sp, job.seed, job.pos, kStreamEmit, lo, hi, sc);
    return r;
  }
  for (int64_t v0 = lo; v0 < hi; v0 += kBlock) {
    const int64_t n = std::min(kBlock, hi - v0);
    gumbel_block(job.seed, job.pos, kStreamEmit, v0, n, sc.g, sc.bits);
    const float* g = sc.g;
    const acc_t* zq = load_q(job.zq, v0, n, sc.z0);
    const acc_t* zp = load_block(job.zp + v0, n, sc.z1);
    probs_block(job.sp, zp, n, v0, sc.p);
    const acc_t* pi = sc.p;
    if (!job.pi_is_p) {
      probs_block(job.sq, zq, n, v0, sc.q);
      if (R.family == kFamilyB) token_set_block(R, zq, zp, n, v0, job.sq, job.sp, job.alpha, sc.z2, sc.pa, sc.in_a);
      blended_block(R.family, job.w, sc.in_a, sc.q, sc.p, n, sc.pi);
      pi = sc.pi;
    }
    const acc_t* q = sc.q;
    acc_t* s = sc.s;
    acc_t* fs = sc.fs;
    acc_t mass = 0;
    if (job.kind == kResidual) {
#pragma omp simd reduction(+ : mass)
      for (int64_t i = 0; i < n; ++i) {
        const acc_t d = pi[i] - q[i];
        const acc_t w = d > acc_t(0) ? d : acc_t(0);
        mass += w;
        s[i] = sc_log(w) + static_cast<acc_t>(g[i]);
      }
      race_block(s, n, v0, r.main);
    }
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) fs[i] = sc_log(pi[i]) + static_cast<acc_t>(g[i]);
    race_block(fs, n, v0, r.fallback);
    r.main.mass += static_cast<double>(mass);
  }
  return r;
}

// The second look over V at one position: TV(q, p) (rules that read it) or eta = q(not A) (family B),
// at T > 0 with drafter logits (T = 0 and token-only drafts have closed forms).
template <typename in_t, typename acc_t>
struct SumJob {
  int64_t b, i;
  bool tv;  // false: eta
  const in_t *zq, *zp;
  PosStats<acc_t> sq, sp;
  acc_t alpha;
};

template <typename in_t, typename acc_t>
double sum_chunk(const RuleArgs& R, const SumJob<in_t, acc_t>& job, int64_t lo, int64_t hi, Scratch<acc_t>& sc) {
  double total = 0.0;
  for (int64_t v0 = lo; v0 < hi; v0 += kBlock) {
    const int64_t n = std::min(kBlock, hi - v0);
    const acc_t* zq = load_block(job.zq + v0, n, sc.z0);
    const acc_t* zp = load_block(job.zp + v0, n, sc.z1);
    probs_block(job.sq, zq, n, v0, sc.q);
    const acc_t* q = sc.q;
    acc_t part = 0;
    if (job.tv) {
      probs_block(job.sp, zp, n, v0, sc.p);
      const acc_t* p = sc.p;
#pragma omp simd reduction(+ : part)
      for (int64_t i = 0; i < n; ++i) {
        const acc_t d = q[i] - p[i];
        part += d > acc_t(0) ? d : acc_t(0);
      }
    } else {
      token_set_block(R, zq, zp, n, v0, job.sq, job.sp, job.alpha, sc.z2, sc.pa, sc.in_a);
      const char* in_a = sc.in_a;
#pragma omp simd reduction(+ : part)
      for (int64_t i = 0; i < n; ++i) part += in_a[i] ? acc_t(0) : q[i];
    }
    total += static_cast<double>(part);
  }
  return total;
}

// Map fn(job, lo, hi, scratch) -> Part over (job, vocabulary chunk) tasks and add each job's chunks, in chunk order
// (deterministic).
template <typename acc_t, typename Part, typename Job, typename F>
std::vector<Part> sum_chunks(const std::vector<Job>& jobs, int64_t V, const F& fn) {
  std::vector<Part> out(jobs.size());
  if (jobs.empty()) return out;
  const auto [part, nch] = map_chunks<acc_t, Part>(jobs, V, 8192, fn);
  for (size_t j = 0; j < jobs.size(); ++j) {
    for (int64_t c = 0; c < nch; ++c) out[j] += part[j * nch + c];
  }
  return out;
}

template <typename in_t, typename acc_t>
std::vector<double> run_sums(const RuleArgs& R, const std::vector<SumJob<in_t, acc_t>>& jobs, int64_t V) {
  return sum_chunks<acc_t, double>(jobs, V, [&](const SumJob<in_t, acc_t>& job, int64_t lo, int64_t hi,
                                                Scratch<acc_t>& sc) { return sum_chunk(R, job, lo, hi, sc); });
}

// Phase "divergence" (only when asked): TV(q, p) and TV(law, p) at one verified position at T > 0 with drafter
// logits, from the statistics the round already has (M, the sums, the cutoffs, eta). Positions where q is one-hot
// (T = 0, token-only drafts) have closed forms (divergences() below), and opt's TV(q, p) comes from its second look.
//   draft: d = sum_v max(0, q - p), whatever the rule.
//   family A: pi - p = (1 - r)(q - p), so TV(pi, p) = (1 - r) d: no sum beyond d.
//   family B, Q = q(A) = 1 - eta: pi - p = q - Q p on A and (eta - 1) p <= 0 off A, so
//      TV(pi, p) = sum_{v in A} max(0, q(v) - Q p(v)) (eta is known: the second look ran at every position).
//   lossy, c(v) = min(q(v), p(v) / (1 - alpha)) (= q(v) a(v), the accepted mass; a = min(1, p / ((1 - alpha) q))):
//      TV(law, p) = sum_v max(0, c(v) - p(v)). Proof: the law is c + beta R with beta = 1 - sum_v c(v) and
//      R = max(0, p - q) / D, D = sum_v max(0, p - q) = sum_v max(0, q - p) = d. Where q <= p, c = q (p / (1 - alpha)
//      >= p >= q) and the law is q + (beta / D)(p - q); where q > p, R = 0 and the law is c >= p. So
//      beta = sum_v (q - c) = sum_{q > p} (q - c) <= sum_{q > p} (q - p) = D, the law is <= p where q <= p (and
//      there c - p = q - p <= 0), and sum_v max(0, law - p) = sum_{q > p} (c - p) = sum_v max(0, c - p). (D = 0:
//      q = p, the law is c = q = p and both sides are 0; the reference's fallback to R = p when D is rounding
//      noise moves the law by at most that noise.)
template <typename in_t, typename acc_t>
struct DivJob {
  int64_t k;  // b * K + i
  const in_t *zq, *zp;
  PosStats<acc_t> sq, sp;
  acc_t alpha, eta;
};

struct DivPart {
  double draft = 0.0, law = 0.0;
  DivPart& operator+=(const DivPart& o) {
    draft += o.draft;
    law += o.law;
    return *this;
  }
};

template <typename in_t, typename acc_t>
DivPart div_chunk(const RuleArgs& R, const DivJob<in_t, acc_t>& job, int64_t lo, int64_t hi, Scratch<acc_t>& sc) {
  DivPart out;
  const acc_t Q = acc_t(1) - job.eta, keep = acc_t(1) - job.alpha;
  for (int64_t v0 = lo; v0 < hi; v0 += kBlock) {
    const int64_t n = std::min(kBlock, hi - v0);
    const acc_t* zq = load_block(job.zq + v0, n, sc.z0);
    const acc_t* zp = load_block(job.zp + v0, n, sc.z1);
    probs_block(job.sq, zq, n, v0, sc.q);
    probs_block(job.sp, zp, n, v0, sc.p);
    const acc_t* q = sc.q;
    const acc_t* p = sc.p;
    acc_t d = 0, l = 0;
#pragma omp simd reduction(+ : d)
    for (int64_t i = 0; i < n; ++i) {
      const acc_t e = q[i] - p[i];
      d += e > acc_t(0) ? e : acc_t(0);
    }
    switch (static_cast<FamilyCode>(R.family)) {
      case kFamilyA:
        break;
      case kFamilyB: {
        token_set_block(R, zq, zp, n, v0, job.sq, job.sp, job.alpha, sc.z2, sc.pa, sc.in_a);
        const char* in_a = sc.in_a;
#pragma omp simd reduction(+ : l)
        for (int64_t i = 0; i < n; ++i) {
          const acc_t e = q[i] - mul_rn(Q, p[i]);
          l += (in_a[i] && e > acc_t(0)) ? e : acc_t(0);
        }
        break;
      }
      case kFamilyLossy:
#pragma omp simd reduction(+ : l)
        for (int64_t i = 0; i < n; ++i) {
          const acc_t c = std::min(q[i], p[i] / keep);
          const acc_t e = c - p[i];
          l += e > acc_t(0) ? e : acc_t(0);
        }
        break;
    }
    out.draft += static_cast<double>(d);
    out.law += static_cast<double>(l);
  }
  return out;
}

// The divergences of every verified position of the valid rows (SPEC.md section 6), written as float32 and at most 1
// (as the reference clamps): q one-hot at `hot` (T = 0: q's argmax, whatever the draft; a token-only draft; -1 for
// one outside [0, V), where q = 0, the law is p and both are 0) in closed form, opt's TV(q, p) from its second look,
// the rest by the divergence pass. w: family A the weight r, family B eta (computed at every position when the
// divergence is asked).
template <typename in_t, typename acc_t>
void divergences(const RuleArgs& R, const Layout<in_t>& L, int64_t V, const std::vector<int64_t>& n, const bool* valid,
                 const std::vector<acc_t>& alpha, const std::vector<PosStats<acc_t>>& qs,
                 const std::vector<PosStats<acc_t>>& ps, const std::vector<acc_t>& tv, const std::vector<acc_t>& w,
                 float* div_out, float* draft_div_out) {
  const int64_t B = L.B, K = L.K;
  std::vector<acc_t> draft(B * K, acc_t(0)), law(B * K, acc_t(0));
  // From TV(q, p) = d: family A (1 - r) d; family B with q one-hot (1 - eta) d (eta = 0 when q's one entry is in A:
  // the law is q; else eta = 1 and the law is p).
  auto from_draft = [&](int64_t k) {
    switch (static_cast<FamilyCode>(R.family)) {
      case kFamilyA:
      case kFamilyB:
        law[k] = (acc_t(1) - w[k]) * draft[k];
        return;
      case kFamilyLossy:
        break;
    }
    SPECCAS_UNREACHABLE();
  };
  std::vector<DivJob<in_t, acc_t>> jobs;
  for (int64_t b = 0; b < B; ++b) {
    if (!valid[b]) continue;
    for (int64_t i = 0; i < n[b]; ++i) {
      const int64_t k = b * K + i;
      const PosStats<acc_t>& sq = qs[k];
      const PosStats<acc_t>& sp = ps[b * (K + 1) + i];
      if (sq.greedy) {
        const int64_t hot = sq.amax;
        if (hot < 0) continue;
        const acc_t ph = prob_at(sp, static_cast<acc_t>(L.p(b, i)[hot]), hot);
        draft[k] = acc_t(1) - ph;  // only q's one entry can exceed p
        if (R.family == kFamilyLossy) {  // the law at hot is min(1, p / (1 - alpha)), below p elsewhere
          const acc_t c = std::min(acc_t(1), ph / (acc_t(1) - alpha[b]));
          law[k] = c > ph ? c - ph : acc_t(0);
        } else {
          from_draft(k);
        }
      } else if (R.needs_tv) {  // the second look summed TV(q, p) here
        draft[k] = tv[k];
        from_draft(k);
      } else {
        jobs.push_back({k, L.q(b, i), L.p(b, i), sq, sp, alpha[b], w[k]});
      }
    }
  }
  const std::vector<DivPart> sums = sum_chunks<acc_t, DivPart>(
      jobs, V, [&](const auto& job, int64_t lo, int64_t hi, Scratch<acc_t>& sc) {
        return div_chunk(R, job, lo, hi, sc);
      });
  for (size_t j = 0; j < jobs.size(); ++j) {
    const int64_t k = jobs[j].k;
    draft[k] = static_cast<acc_t>(sums[j].draft);
    if (R.family == kFamilyA) {
      from_draft(k);
    } else {
      law[k] = static_cast<acc_t>(sums[j].law);
    }
  }
  for (int64_t k = 0; k < B * K; ++k) {
    draft_div_out[k] = static_cast<float>(std::min(draft[k], acc_t(1)));
    div_out[k] = static_cast<float>(std::min(law[k], acc_t(1)));
  }
}

// div_out, draft_div_out ([B, K] float32, zero-filled): the divergences, or null when they are not asked for.
template <typename in_t, typename acc_t>
void verify_cpu_impl(const VerifyInputs& in, const Layout<in_t>& L, VerifyResult& out, float* div_out,
                     float* draft_div_out) {
  const int64_t B = in.B, K = in.K, V = in.V;
  const RuleArgs& R = in.rule;
  const bool token_drafts = L.zq == nullptr;
  const bool want_div = div_out != nullptr;
  const Rows<acc_t> alpha_in = rows_of<acc_t>(in.alpha), temp_in = rows_of<acc_t>(in.temperature);
  const Rows<int64_t> seed = rows_of<int64_t>(in.seed), offset = rows_of<int64_t>(in.offset);
  const FilterRows<acc_t> filters = filter_rows<acc_t>(in);
  int64_t* tok = std::get<0>(out).data_ptr<int64_t>();
  int64_t* nacc = std::get<1>(out).data_ptr<int64_t>();
  bool* defer_out = std::get<2>(out).data_ptr<bool>();
  float* ap_out = std::get<3>(out).data_ptr<float>();
  bool* valid = std::get<4>(out).data_ptr<bool>();

  // Row parameters (checks.alpha_rows_ok, filter_rows_ok, finite T >= 0); a rule without alpha reads it as 0.
  std::vector<int64_t> n(B);
  std::vector<acc_t> T(B), inv_t(B), alpha(B);
  std::vector<RowFilter<acc_t>> filt(B);
  for (int64_t b = 0; b < B; ++b) {
    n[b] = L.count(b);
    T[b] = temp_in[b];
    inv_t[b] = inv_temperature(T[b]);
    alpha[b] = R.uses_alpha ? alpha_in[b] : acc_t(0);
    const bool t_ok = (T[b] - T[b]) == acc_t(0) && T[b] >= acc_t(0);
    valid[b] = t_ok && alpha_ok(R, alpha_in[b]) && filters.ok(b);
    filt[b] = filters.at(b, V);
    filt[b].on = filt[b].on && T[b] > acc_t(0);  // greedy rows ignore the filters
  }

  // Phase "stats": every used position of the valid rows (drafter positions only with drafter logits).
  std::vector<PosStats<acc_t>> qs(B * K), ps(B * (K + 1));
  {
    std::vector<StatsJob<in_t, acc_t>> jobs;
    std::vector<PosStats<acc_t>*> dest;
    std::vector<int64_t> row;
    for (int64_t b = 0; b < B; ++b) {
      if (!valid[b]) continue;
      const bool greedy = T[b] == acc_t(0), sT = !greedy && !filt[b].on;
      for (int64_t i = 0; i < n[b] && !token_drafts; ++i) {
        jobs.push_back({L.q(b, i), inv_t[b], true, sT, greedy});
        dest.push_back(&qs[b * K + i]);
        row.push_back(b);
      }
      for (int64_t i = 0; i <= n[b]; ++i) {
        const bool bonus = i == n[b];  // its race reads only the max (and the cutoff)
        jobs.push_back({L.p(b, i), inv_t[b], !bonus, sT && !bonus, greedy});
        dest.push_back(&ps[b * (K + 1) + i]);
        row.push_back(b);
      }
    }
    std::vector<PosStats<acc_t>> st = run_stats(jobs, V);
    for (size_t j = 0; j < jobs.size(); ++j) {
      st[j].greedy = T[row[j]] == acc_t(0);
      *dest[j] = st[j];
      if (st[j].bad) valid[row[j]] = false;
    }
  }
  if (token_drafts) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t i = 0; i < n[b] && valid[b]; ++i) qs[b * K + i] = token_stats<acc_t>(L.draft(b, i), V);
    }
  }

  // Phase "filters": the cutoff and the sampling sum at every position of the filtered rows.
  {
    std::vector<FilterJob<in_t, acc_t>> jobs;
    for (int64_t b = 0; b < B; ++b) {
      if (!valid[b] || !filt[b].on) continue;
      for (int64_t i = 0; i < n[b] && !token_drafts; ++i) jobs.push_back({L.q(b, i), filt[b], &qs[b * K + i]});
      for (int64_t i = 0; i <= n[b]; ++i) jobs.push_back({L.p(b, i), filt[b], &ps[b * (K + 1) + i]});
    }
    run_filters(jobs, V);
  }

  // Phase "merge": per drafted token, q(x), p(x), the token set at x, the rule's decision where the merged
  // statistics allow it, and the positions whose rule needs a second look over V (TV, or eta).
  std::vector<acc_t> a(B * K, acc_t(0)), qx(B * K, acc_t(0)), px(B * K, acc_t(0));
  std::vector<acc_t> tv(B * K, acc_t(0)), w(B * K, acc_t(0));  // w: family A the weight r, family B eta
  std::vector<char> in_a(B * K, 0), x_ok(B * K, 0);
  std::vector<SumJob<in_t, acc_t>> sums;
  // Second-look sums only the divergence reads (eta where the draft is in A): a list of their own, so that the
  // decisions' sums are split into the same chunks, and add up to the same bits, whether the divergence is asked
  // or not.
  std::vector<SumJob<in_t, acc_t>> div_sums;
  auto weigh = [&](int64_t b, int64_t i) {  // family A: r once tv is known
    const int64_t k = b * K + i;
    w[k] = blend_weight(R.code, alpha[b], max_unscaled(qs[k]), max_unscaled(ps[b * (K + 1) + i]), tv[k]);
  };
  auto set_accept = [&](int64_t b, int64_t i) {
    const int64_t k = b * K + i;
    a[k] = x_ok[k] ? acceptance(R.family, alpha[b], w[k], in_a[k] != 0, qx[k], px[k]) : acc_t(0);
  };
  for (int64_t b = 0; b < B; ++b) {
    if (!valid[b]) continue;
    const acc_t al = alpha[b];
    for (int64_t i = 0; i < n[b]; ++i) {
      const int64_t k = b * K + i;
      const PosStats<acc_t>& sq = qs[k];
      const PosStats<acc_t>& sp = ps[b * (K + 1) + i];
      const in_t* rq = token_drafts ? nullptr : L.q(b, i);
      const in_t* rp = L.p(b, i);
      auto zq_at = [&](int64_t v) { return rq ? static_cast<acc_t>(rq[v]) : acc_t(0); };
      auto zp_at = [&](int64_t v) { return static_cast<acc_t>(rp[v]); };
      const int64_t xv = L.draft(b, i);
      x_ok[k] = xv >= 0 && xv < V;
      if (x_ok[k]) {
        qx[k] = prob_at(sq, zq_at(xv), xv);
        px[k] = prob_at(sp, zp_at(xv), xv);
      }
      // q one-hot (T = 0, or a token-only draft) at `hot` (-1: q = 0, a token-only draft outside [0, V)).
      const int64_t hot = sq.greedy ? sq.amax : -1;
      switch (static_cast<FamilyCode>(R.family)) {
        case kFamilyLossy:
          break;
        case kFamilyB: {
          auto member = [&](int64_t v) {
            const acc_t qh = R.reads_qh ? unscaled_at(sq, zq_at(v), v) : acc_t(0);
            const acc_t ph = R.reads_ph ? unscaled_at(sp, zp_at(v), v) : acc_t(0);
            return in_token_set(R.code, al, qh, ph, max_unscaled(sp));
          };
          in_a[k] = x_ok[k] && member(xv);
          const bool decides = !(in_a[k] && qx[k] > acc_t(0));  // eta is read by a_i, or by the residual here
          if (decides || want_div) {  // (or only by the divergence)
            if (sq.greedy) {
              w[k] = (hot < 0 || member(hot)) ? acc_t(0) : acc_t(1);
            } else if (decides) {
              sums.push_back({b, i, false, rq, rp, sq, sp, al});
              continue;
            } else {
              div_sums.push_back({b, i, false, rq, rp, sq, sp, al});
            }
          }
          break;
        }
        case kFamilyA:
          if (R.needs_tv) {
            if (sq.greedy) {  // sum_v max(0, q - p) = 1 - p(hot): only q's one entry can exceed p
              tv[k] = hot < 0 ? acc_t(0) : acc_t(1) - prob_at(sp, zp_at(hot), hot);
            } else {
              sums.push_back({b, i, true, rq, rp, sq, sp, al});
              continue;
            }
          }
          weigh(b, i);
          break;
      }
      set_accept(b, i);
    }
  }
  // Phase "second look".
  {
    const std::vector<double> total = run_sums(R, sums, V);
    for (size_t j = 0; j < sums.size(); ++j) {
      const SumJob<in_t, acc_t>& job = sums[j];
      const int64_t k = job.b * K + job.i;
      if (job.tv) {
        tv[k] = static_cast<acc_t>(total[j]);
        weigh(job.b, job.i);
      } else {
        w[k] = static_cast<acc_t>(total[j]);
      }
      set_accept(job.b, job.i);
    }
    const std::vector<double> eta = run_sums(R, div_sums, V);
    for (size_t j = 0; j < div_sums.size(); ++j) w[div_sums[j].b * K + div_sums[j].i] = static_cast<acc_t>(eta[j]);
  }
  if (want_div) divergences(R, L, V, n, valid, alpha, qs, ps, tv, w, div_out, draft_div_out);

  // Phase "accept": the accept loop, and the race each row needs.
  std::vector<int64_t> m(B, 0), emitted(B, -1);
  std::vector<RaceJob<in_t, acc_t>> races;
  for (int64_t b = 0; b < B; ++b) {
    if (!valid[b]) continue;
    int64_t mb = 0;
    while (mb < n[b] && static_cast<acc_t>(uniform(seed[b], wrap_add(offset[b], mb), kStreamAccept, 0)) < a[b * K + mb]) {
      ++mb;
    }
    m[b] = mb;
    RaceJob<in_t, acc_t> job;
    job.b = b;
    job.seed = seed[b];
    job.pos = wrap_add(offset[b], mb);
    job.alpha = alpha[b];
    job.zp = L.p(b, mb);
    job.sp = ps[b * (K + 1) + mb];
    if (mb == n[b]) {  // bonus from p_n
      if (T[b] == acc_t(0)) {
        emitted[b] = job.sp.amax;
        continue;
      }
      job.kind = kBonus;
    } else {  // the residual at position mb
      const int64_t k = b * K + mb;
      job.zq = token_drafts ? nullptr : L.q(b, mb);
      job.sq = qs[k];
      job.w = w[k];
      job.pi_is_p = token_drafts && !x_ok[k];
      job.kind = job.pi_is_p || residual_is_empty(R.family, w[k]) ? kPi : kResidual;
    }
    races.push_back(job);
  }
  // Phases "race" and "emit".
  const std::vector<RacePair<acc_t>> res = run_races<acc_t, RacePair<acc_t>>(
      races, V, [&](const RaceJob<in_t, acc_t>& job, int64_t lo, int64_t hi, Scratch<acc_t>& sc) {
        return race_chunk(R, job, lo, hi, sc);
      });
  for (size_t j = 0; j < races.size(); ++j) {
    const bool residual = races[j].kind == kResidual && res[j].main.mass > residual_eps<acc_t>();
    emitted[races[j].b] = races[j].kind == kBonus || residual ? res[j].main.idx : res[j].fallback.idx;
  }

  // Outputs (preallocated: tokens -1, the rest zero).
  for (int64_t b = 0; b < B; ++b) {
    if (!valid[b]) continue;
    for (int64_t i = 0; i < m[b]; ++i) tok[b * (K + 1) + i] = L.draft(b, i);
    tok[b * (K + 1) + m[b]] = clamp64(emitted[b], 0, V - 1);
    nacc[b] = m[b];
    for (int64_t i = 0; i < n[b]; ++i) {
      const int64_t k = b * K + i;
      defer_out[k] = R.family == kFamilyLossy || (R.family == kFamilyA ? w[k] > acc_t(0) : !in_a[k]);
      ap_out[k] = static_cast<float>(a[k]);
    }
  }
}

// One round on checked inputs into `out`, and the divergences into div / draft_div when they are defined.
void run_verify(const VerifyInputs& in, VerifyResult& out, const at::Tensor& div, const at::Tensor& draft_div) {
  if (in.B == 0) return;
  // A ragged batch with no drafts at all still has rows whose (unchecked) counts may claim some: they read a
  // row of zeros, as reference.padded gathers them.
  const at::Tensor zq = in.ragged() && !in.token_drafts() && in.x.size(0) == 0
                            ? at::zeros({1, in.zq.size(1)}, in.zq.options())
                            : in.zq;
  float* div_out = div.defined() ? div.data_ptr<float>() : nullptr;
  float* draft_div_out = draft_div.defined() ? draft_div.data_ptr<float>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, in.zp.scalar_type(), "verify_native_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    Layout<scalar_t> L;
    L.zq = in.token_drafts() ? nullptr : zq.data_ptr<scalar_t>();
    L.zp = in.zp.data_ptr<scalar_t>();
    L.x = in.x.data_ptr<int64_t>();
    L.cu = in.ragged() ? in.cu.data_ptr<int64_t>() : nullptr;
    L.sqB = in.sqB;
    L.sqL = in.ragged() && !in.token_drafts() ? zq.stride(0) : in.sqL;
    L.spB = in.spB;
    L.spL = in.spL;
    L.B = in.B;
    L.K = in.K;
    L.N = in.ragged() ? in.x.size(0) : 0;
    L.n = rows_of<int64_t>(in.n);
    verify_cpu_impl<scalar_t, acc_t>(in, L, out, div_out, draft_div_out);
  });
}

VerifyResult verify_native_cpu(SPECCAS_VERIFY_PARAMS) {
  const VerifyInputs in = SPECCAS_CHECK_VERIFY_INPUTS();
  VerifyResult out = empty_verify_outputs(in, target_logits.options());
  run_verify(in, out, at::Tensor(), at::Tensor());
  return out;
}

// verify_native and, from the same round, divergence and draft_divergence [B, K] float32 (SPEC.md section 6).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
verify_divergence_native_cpu(SPECCAS_VERIFY_PARAMS) {
  const VerifyInputs in = SPECCAS_CHECK_VERIFY_INPUTS();
  VerifyResult out = empty_verify_outputs(in, target_logits.options());
  const at::Tensor div = at::zeros({in.B, in.K}, target_logits.options().dtype(at::kFloat));
  const at::Tensor draft_div = at::zeros({in.B, in.K}, target_logits.options().dtype(at::kFloat));
  run_verify(in, out, div, draft_div);
  return std::tuple_cat(out, std::make_tuple(div, draft_div));
}

}  // namespace
}  // namespace cpu
}  // namespace speccas

TORCH_LIBRARY_IMPL(speccas, CPU, m) {
  m.impl("verify_native", &speccas::cpu::verify_native_cpu);
  m.impl("verify_divergence_native", &speccas::cpu::verify_divergence_native_cpu);
}
