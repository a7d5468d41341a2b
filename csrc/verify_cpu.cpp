// verify_native on CPU: one verification round of SPEC.md sections 1-6, token for token the
// formulas of speccas_kernels/reference.py (which materializes every distribution; this does not).
//
// Row b, n = num_draft_tokens[b] (clamped to [0, K]), T = temperature[b], in the phases every backend
// names the same way (the rule's formulas are csrc/rules.h, its row of rules.py arrives as RuleArgs):
//   stats: parallel over (position, vocabulary chunk): for the n drafter positions and the n + 1 target
//      positions, max z, sum exp(z - max), sum exp((z - max) / T), the first argmax (T = 0) and the
//      NaN / +inf / all -inf flags. A row with a bad position, T < 0 or NaN, or alpha outside the rule's
//      range is invalid: tokens -1, nothing else computed.
//   merge: per drafted token x_i: q(x), p(x), the token set at x and the rule's decision; rules that read
//      TV(q, p) and token sets (eta = sum_{v not in A} q(v)) need
//   second look: a second pass over V, only at the positions (and temperatures) that need it (T = 0 has
//      closed forms).
//   accept: accept while u_i < a_i, u_i = uniform(seed, offset + i, STREAM_ACCEPT, 0).
//   race: one race over V at the one position needed, noise G = gumbel(seed, offset + m, STREAM_EMIT, v):
//      the bonus argmax zp_n + T G (plain argmax at T = 0), or the residual argmax log(w) + G with
//      w = max(0, pi_m - q_m), and pi_m itself (a second race) when w's mass is rounding noise;
//   emit: the chunks of the race merged, the outputs written.
// Compute type: float32 for fp32/bf16/fp16 logits, float64 for fp64 logits (as the reference).
#include <vector>

#include "cpu_common.h"
#include "speccas.h"

namespace speccas {
namespace cpu {
namespace {

template <typename in_t>
struct LogitsView {
  const in_t* data;
  int64_t sB, sL;  // element strides of dims 0 and 1 (dim 2 is contiguous)
  const in_t* row(int64_t b, int64_t i) const { return data + b * sB + i * sL; }
};

enum RaceKind : int {
  kBonus = 0,  // the bonus: zp_n + T G (plain argmax at T = 0)
  kResidual,   // w = max(0, pi - q), with the race over pi as its fallback when w is all zero
  kPi,         // pi itself (family A with r = 0, where pi = q and the residual is empty by construction)
};

// One race over the vocabulary at one position of one row.
template <typename in_t, typename acc_t>
struct RaceJob {
  int kind = kBonus;
  int64_t b = 0, seed = 0, pos = 0;
  const in_t* zq = nullptr;  // drafter logits at the race position (residual races)
  const in_t* zp = nullptr;  // target logits at the race position
  PosStats<acc_t> sq, sp;
  acc_t T = 1, alpha = 0, w = 0;  // w: family A the weight r, family B eta
};

// Unscaled probabilities of a block for the token set (only those the rule reads), and membership.
template <typename acc_t>
inline void token_set_block(const RuleArgs& R, const acc_t* zq, const acc_t* zp, int64_t n, const PosStats<acc_t>& sq,
                            const PosStats<acc_t>& sp, acc_t alpha, acc_t* qh, acc_t* ph, char* in_a) {
  const acc_t max_ph = acc_t(1) / sp.S1;
  if (R.reads_qh) unscaled_block(zq, n, sq, qh);
  if (R.reads_ph) unscaled_block(zp, n, sp, ph);
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
  const acc_t T = job.T;
  for (int64_t v0 = lo; v0 < hi; v0 += kBlock) {
    const int64_t n = std::min(kBlock, hi - v0);
    gumbel_block(job.seed, job.pos, kStreamEmit, v0, n, sc.g, sc.bits);
    const float* g = sc.g;
    acc_t* s = sc.s;
    if (job.kind == kBonus) {
      const acc_t* z = load_block(job.zp + v0, n, sc.z1);
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) s[i] = z[i] + T * static_cast<acc_t>(g[i]);
      race_block(s, n, v0, r.main);
      continue;
    }
    const acc_t* zq = load_block(job.zq + v0, n, sc.z0);
    const acc_t* zp = load_block(job.zp + v0, n, sc.z1);
    probs_block(zq, n, v0, job.sq, T, sc.q);
    probs_block(zp, n, v0, job.sp, T, sc.p);
    if (R.family == kFamilyB) token_set_block(R, zq, zp, n, job.sq, job.sp, job.alpha, sc.z2, sc.pa, sc.in_a);
    blended_block(R.family, job.w, sc.in_a, sc.q, sc.p, n, sc.pi);
    const acc_t *q = sc.q, *pi = sc.pi;
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

template <typename in_t, typename acc_t>
std::vector<RacePair<acc_t>> run_races(const RuleArgs& R, const std::vector<RaceJob<in_t, acc_t>>& jobs, int64_t V) {
  std::vector<RacePair<acc_t>> out(jobs.size());
  if (jobs.empty()) return out;
  const auto [part, nch] = map_chunks<acc_t, RacePair<acc_t>>(
      jobs, V, 4096, [&](const RaceJob<in_t, acc_t>& job, int64_t lo, int64_t hi, Scratch<acc_t>& sc) {
        return race_chunk(R, job, lo, hi, sc);
      });
  for (size_t j = 0; j < jobs.size(); ++j) out[j] = merge_races(part.data() + j * nch, nch);
  return out;
}

// The second look over V at one position: TV(q, p) (rules that read it) or eta = q(not A) (family B),
// at T > 0 (T = 0 has closed forms).
template <typename in_t, typename acc_t>
struct SumJob {
  int64_t b, i;
  bool tv;  // false: eta
  const in_t *zq, *zp;
  PosStats<acc_t> sq, sp;
  acc_t T, alpha;
};

template <typename in_t, typename acc_t>
double sum_chunk(const RuleArgs& R, const SumJob<in_t, acc_t>& job, int64_t lo, int64_t hi, Scratch<acc_t>& sc) {
  double total = 0.0;
  for (int64_t v0 = lo; v0 < hi; v0 += kBlock) {
    const int64_t n = std::min(kBlock, hi - v0);
    const acc_t* zq = load_block(job.zq + v0, n, sc.z0);
    const acc_t* zp = load_block(job.zp + v0, n, sc.z1);
    probs_block(zq, n, v0, job.sq, job.T, sc.q);
    const acc_t* q = sc.q;
    acc_t part = 0;
    if (job.tv) {
      probs_block(zp, n, v0, job.sp, job.T, sc.p);
      const acc_t* p = sc.p;
#pragma omp simd reduction(+ : part)
      for (int64_t i = 0; i < n; ++i) {
        const acc_t d = q[i] - p[i];
        part += d > acc_t(0) ? d : acc_t(0);
      }
    } else {
      token_set_block(R, zq, zp, n, job.sq, job.sp, job.alpha, sc.z2, sc.pa, sc.in_a);
      const char* in_a = sc.in_a;
#pragma omp simd reduction(+ : part)
      for (int64_t i = 0; i < n; ++i) part += in_a[i] ? acc_t(0) : q[i];
    }
    total += static_cast<double>(part);
  }
  return total;
}

template <typename in_t, typename acc_t>
std::vector<double> run_sums(const RuleArgs& R, const std::vector<SumJob<in_t, acc_t>>& jobs, int64_t V) {
  std::vector<double> out(jobs.size(), 0.0);
  if (jobs.empty()) return out;
  const auto [part, nch] = map_chunks<acc_t, double>(
      jobs, V, 8192, [&](const SumJob<in_t, acc_t>& job, int64_t lo, int64_t hi, Scratch<acc_t>& sc) {
        return sum_chunk(R, job, lo, hi, sc);
      });
  for (size_t j = 0; j < jobs.size(); ++j) {
    for (int64_t c = 0; c < nch; ++c) out[j] += part[j * nch + c];  // chunk order: deterministic
  }
  return out;
}

template <typename in_t, typename acc_t>
void verify_cpu_impl(const VerifyInputs& in, at::Tensor& tokens, at::Tensor& num_accepted, at::Tensor& deferred,
                     at::Tensor& accept_prob, at::Tensor& valid_out) {
  const int64_t B = in.B, K = in.K, V = in.V;
  const RuleArgs& R = in.rule;
  const LogitsView<in_t> zq{in.zq.data_ptr<in_t>(), in.zq.stride(0), in.zq.stride(1)};
  const LogitsView<in_t> zp{in.zp.data_ptr<in_t>(), in.zp.stride(0), in.zp.stride(1)};
  const int64_t* x = in.x.data_ptr<int64_t>();
  const acc_t* alpha_p = in.alpha.data_ptr<acc_t>();
  const acc_t* temp_p = in.temperature.data_ptr<acc_t>();
  const int64_t* seed = in.seed.data_ptr<int64_t>();
  const int64_t* offset = in.offset.data_ptr<int64_t>();
  const int64_t* ndraft = in.n.data_ptr<int64_t>();
  int64_t* tok = tokens.data_ptr<int64_t>();
  int64_t* nacc = num_accepted.data_ptr<int64_t>();
  bool* defer_out = deferred.data_ptr<bool>();
  float* ap_out = accept_prob.data_ptr<float>();
  bool* valid = valid_out.data_ptr<bool>();

  // Row parameters (checks.alpha_rows_ok, finite T >= 0); a rule without alpha reads it as 0.
  std::vector<int64_t> n(B);
  std::vector<acc_t> T(B), alpha(B);
  for (int64_t b = 0; b < B; ++b) {
    n[b] = std::min<int64_t>(std::max<int64_t>(ndraft[b], 0), K);
    T[b] = temp_p[b];
    alpha[b] = R.uses_alpha ? alpha_p[b] : acc_t(0);
    const bool t_ok = (T[b] - T[b]) == acc_t(0) && T[b] >= acc_t(0);
    valid[b] = t_ok && alpha_ok(R, alpha_p[b]);
  }

  // Phase "stats": every used position of the valid rows.
  struct Item {
    int64_t b, i;
    bool target;
  };
  std::vector<Item> items;
  for (int64_t b = 0; b < B; ++b) {
    if (!valid[b]) continue;
    for (int64_t i = 0; i < n[b]; ++i) items.push_back({b, i, false});
    for (int64_t i = 0; i <= n[b]; ++i) items.push_back({b, i, true});
  }
  std::vector<PosStats<acc_t>> qs(B * K), ps(B * (K + 1));
  {
    const int64_t ni = static_cast<int64_t>(items.size());
    const Plan pl = plan_chunks(ni, V);
    std::vector<ChunkStats<acc_t>> part(ni * pl.nch);
    parallel_tasks(ni * pl.nch, pl.csz, [&](int64_t t0, int64_t t1) {
      std::unique_ptr<acc_t[]> buf(new acc_t[kBlock]);
      for (int64_t t = t0; t < t1; ++t) {
        const Item& it = items[t / pl.nch];
        const int64_t c = t % pl.nch, lo = c * pl.csz, hi = std::min(V, lo + pl.csz);
        if (lo >= hi) continue;
        const in_t* z = it.target ? zp.row(it.b, it.i) : zq.row(it.b, it.i);
        const acc_t Tb = T[it.b];
        // The bonus position's sums are never read: its race is zp + T G (argmax at T = 0).
        const bool sums = !(it.target && it.i == n[it.b]);
        part[t] = stats_chunk<in_t, acc_t>(z, lo, hi, Tb, sums, Tb == acc_t(0), buf.get());
      }
    });
    for (int64_t k = 0; k < ni; ++k) {
      const Item& it = items[k];
      const PosStats<acc_t> st = merge_stats(part.data() + k * pl.nch, pl.nch, T[it.b]);
      (it.target ? ps[it.b * (K + 1) + it.i] : qs[it.b * K + it.i]) = st;
      if (st.bad) valid[it.b] = false;
    }
  }

  // Phase "merge" (the decisions the merged statistics allow): per drafted token, q(x), p(x), the token set at x, and the positions whose rule
  // needs a second look over V (TV, or eta).
  std::vector<acc_t> a(B * K, acc_t(0)), qx(B * K, acc_t(0)), px(B * K, acc_t(0));
  std::vector<acc_t> tv(B * K, acc_t(0)), w(B * K, acc_t(0));  // w: family A the weight r, family B eta
  std::vector<char> in_a(B * K, 0), x_ok(B * K, 0);
  std::vector<SumJob<in_t, acc_t>> sums;
  auto weigh = [&](int64_t b, int64_t i) {  // family A: r once tv is known
    const int64_t k = b * K + i;
    w[k] = blend_weight(R.code, alpha[b], acc_t(1) / qs[k].S1, acc_t(1) / ps[b * (K + 1) + i].S1, tv[k]);
  };
  auto set_accept = [&](int64_t b, int64_t i) {
    const int64_t k = b * K + i;
    a[k] = x_ok[k] ? acceptance(R.family, alpha[b], w[k], in_a[k] != 0, qx[k], px[k]) : acc_t(0);
  };
  for (int64_t b = 0; b < B; ++b) {
    if (!valid[b]) continue;
    const acc_t Tb = T[b], al = alpha[b];
    for (int64_t i = 0; i < n[b]; ++i) {
      const int64_t k = b * K + i;
      const PosStats<acc_t>& sq = qs[k];
      const PosStats<acc_t>& sp = ps[b * (K + 1) + i];
      const in_t* rq = zq.row(b, i);
      const in_t* rp = zp.row(b, i);
      const int64_t xv = x[k];
      x_ok[k] = xv >= 0 && xv < V;
      if (x_ok[k]) {
        qx[k] = prob_at(static_cast<acc_t>(rq[xv]), xv, sq, Tb);
        px[k] = prob_at(static_cast<acc_t>(rp[xv]), xv, sp, Tb);
      }
      switch (static_cast<FamilyCode>(R.family)) {
        case kFamilyLossy:
          break;
        case kFamilyB: {
          const acc_t max_ph = acc_t(1) / sp.S1;
          auto member = [&](int64_t v) {
            const acc_t qh = R.reads_qh ? sc_exp(static_cast<acc_t>(rq[v]) - sq.M) / sq.S1 : acc_t(0);
            const acc_t ph = R.reads_ph ? sc_exp(static_cast<acc_t>(rp[v]) - sp.M) / sp.S1 : acc_t(0);
            return in_token_set(R.code, al, qh, ph, max_ph);
          };
          in_a[k] = x_ok[k] && member(xv);
          if (!(in_a[k] && qx[k] > acc_t(0))) {  // eta is read: by a_i, or by the residual here
            if (Tb == acc_t(0)) {
              w[k] = member(sq.amax) ? acc_t(0) : acc_t(1);  // q is one-hot at its argmax
            } else {
              sums.push_back({b, i, false, rq, rp, sq, sp, Tb, al});
              continue;
            }
          }
          break;
        }
        case kFamilyA:
          if (R.needs_tv) {
            if (Tb == acc_t(0)) {
              tv[k] = sq.amax != sp.amax ? acc_t(1) : acc_t(0);
            } else {
              sums.push_back({b, i, true, rq, rp, sq, sp, Tb, al});
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
  }

  // Phase "accept": the accept loop, and the race each row needs.
  std::vector<int64_t> m(B, 0), emitted(B, -1);
  std::vector<RaceJob<in_t, acc_t>> races;
  for (int64_t b = 0; b < B; ++b) {
    if (!valid[b]) continue;
    int64_t mb = 0;
    while (mb < n[b] && static_cast<acc_t>(uniform(seed[b], offset[b] + mb, kStreamAccept, 0)) < a[b * K + mb]) ++mb;
    m[b] = mb;
    RaceJob<in_t, acc_t> job;
    job.b = b;
    job.seed = seed[b];
    job.pos = offset[b] + mb;
    job.T = T[b];
    job.alpha = alpha[b];
    job.zp = zp.row(b, mb);
    if (mb == n[b]) {  // bonus from p_n
      if (T[b] == acc_t(0)) {
        emitted[b] = ps[b * (K + 1) + mb].amax;
        continue;
      }
      job.kind = kBonus;
    } else {  // the residual at position mb
      const int64_t k = b * K + mb;
      job.zq = zq.row(b, mb);
      job.sq = qs[k];
      job.sp = ps[b * (K + 1) + mb];
      job.w = w[k];
      job.kind = residual_is_empty(R.family, w[k]) ? kPi : kResidual;
    }
    races.push_back(job);
  }
  // Phases "race" and "emit".
  const std::vector<RacePair<acc_t>> res = run_races(R, races, V);
  for (size_t j = 0; j < races.size(); ++j) {
    const bool residual = races[j].kind == kResidual && res[j].main.mass > residual_eps<acc_t>();
    emitted[races[j].b] = races[j].kind == kBonus || residual ? res[j].main.idx : res[j].fallback.idx;
  }

  // Outputs (preallocated: tokens -1, the rest zero).
  for (int64_t b = 0; b < B; ++b) {
    if (!valid[b]) continue;
    for (int64_t i = 0; i < m[b]; ++i) tok[b * (K + 1) + i] = x[b * K + i];
    tok[b * (K + 1) + m[b]] = std::min<int64_t>(std::max<int64_t>(emitted[b], 0), V - 1);
    nacc[b] = m[b];
    for (int64_t i = 0; i < n[b]; ++i) {
      const int64_t k = b * K + i;
      defer_out[k] = R.family == kFamilyLossy || (R.family == kFamilyA ? w[k] > acc_t(0) : !in_a[k]);
      ap_out[k] = static_cast<float>(a[k]);
    }
  }
}

VerifyResult verify_native_cpu(const at::Tensor& draft_logits, const at::Tensor& target_logits,
                               const at::Tensor& draft_tokens, at::IntArrayRef rule,
                               at::ArrayRef<double> alpha_range, const at::Tensor& alpha,
                               const at::Tensor& temperature, const at::Tensor& seed, const at::Tensor& offset,
                               const at::Tensor& num_draft_tokens, int64_t vocab_size) {
  const VerifyInputs in = check_verify_inputs(draft_logits, target_logits, draft_tokens, rule, alpha_range, alpha, temperature,
                                              seed, offset, num_draft_tokens, vocab_size);
  VerifyResult out = empty_verify_outputs(in, draft_logits.options());
  if (in.B > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, in.zq.scalar_type(), "verify_native_cpu", [&] {
      using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      verify_cpu_impl<scalar_t, acc_t>(in, std::get<0>(out), std::get<1>(out), std::get<2>(out), std::get<3>(out),
                                       std::get<4>(out));
    });
  }
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace speccas

TORCH_LIBRARY_IMPL(speccas, CPU, m) { m.impl("verify_native", &speccas::cpu::verify_native_cpu); }
