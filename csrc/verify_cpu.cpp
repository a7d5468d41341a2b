// verify_native on CPU: one verification round of SPEC.md sections 1-6, token for token the
// formulas of speccas_kernels/reference.py (which materializes every distribution; this does not).
//
// Row b, n = num_draft_tokens[b] (clamped to [0, K]), T = temperature[b]:
//   1. Statistics pass, parallel over (position, vocabulary chunk): for the n drafter positions
//      and the n + 1 target positions, max z, sum exp(z - max), sum exp((z - max) / T), the first
//      argmax (T = 0) and the NaN / +inf / all -inf flags. A row with a bad position, T < 0 or NaN,
//      or alpha outside the rule's range is invalid: tokens -1, nothing else computed.
//   2. Per drafted token x_i: q(x), p(x), q^, p^ statistics and the rule's decision; `opt` needs
//      TV(q, p) and family B needs eta = sum_{v not in A} q(v): a second pass over V, only at the
//      positions (and temperatures) that need it (T = 0 has closed forms).
//   3. The accept loop: accept while u_i < a_i, u_i = uniform(seed, offset + i, STREAM_ACCEPT, 0).
//   4. One race over V at the one position needed, noise G = gumbel(seed, offset + m, STREAM_EMIT, v):
//      the bonus argmax zp_n + T G (plain argmax at T = 0), or the residual argmax log(w) + G with
//      w = max(0, pi_m - q_m), and pi_m itself (a second race) when w is all zero.
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
  kBonus = 0,  // zp_n + T G
  kResP,       // w = max(0, p - q)
  kResB,       // w = max(0, q 1[A] + eta p - q)
  kFallP,      // log(p) + G
  kFallQ,      // log(q) + G
  kFallB,      // log(q 1[A] + eta p) + G
};

template <typename in_t, typename acc_t>
struct RaceJob {
  int kind = kBonus;
  int64_t b = 0, seed = 0, pos = 0;
  const in_t* zq = nullptr;  // drafter logits at the race position (residual races)
  const in_t* zp = nullptr;  // target logits at the race position
  const in_t* za = nullptr;  // logits defining the token set A (family B)
  PosStats<acc_t> sq, sp, sa;
  acc_t T = 1, thr = 0, eta = 0;
};

template <typename in_t, typename acc_t>
Race<acc_t> race_chunk(const RaceJob<in_t, acc_t>& job, int64_t lo, int64_t hi, Scratch<acc_t>& sc) {
  Race<acc_t> r;
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
      race_block(s, n, v0, r);
      continue;
    }
    const bool need_q = job.kind != kFallP;
    const bool need_p = job.kind != kFallQ;
    const bool family_b = job.kind == kResB || job.kind == kFallB;
    if (need_q) probs_block(load_block(job.zq + v0, n, sc.z0), n, v0, job.sq, T, sc.q);
    if (need_p) probs_block(load_block(job.zp + v0, n, sc.z1), n, v0, job.sp, T, sc.p);
    if (family_b) {
      unscaled_block(load_block(job.za + v0, n, sc.z2), n, job.sa, sc.pa);
      const acc_t thr = job.thr, eta = job.eta;
      const acc_t *q = sc.q, *p = sc.p, *pa = sc.pa;
      acc_t* pi = sc.pa;  // in place
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) pi[i] = (pa[i] >= thr ? q[i] : acc_t(0)) + eta * p[i];
    }
    const acc_t* q = sc.q;
    const acc_t* pi = family_b ? sc.pa : sc.p;
    int any = 0;
    switch (job.kind) {
      case kResP:
      case kResB: {
#pragma omp simd reduction(| : any)
        for (int64_t i = 0; i < n; ++i) {
          const acc_t d = pi[i] - q[i];
          const acc_t w = d > acc_t(0) ? d : acc_t(0);
          any |= static_cast<int>(w > acc_t(0));
          s[i] = sc_log(w) + static_cast<acc_t>(g[i]);
        }
        break;
      }
      case kFallQ: {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) s[i] = sc_log(q[i]) + static_cast<acc_t>(g[i]);
        break;
      }
      default: {  // kFallP, kFallB
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) s[i] = sc_log(pi[i]) + static_cast<acc_t>(g[i]);
        break;
      }
    }
    r.any_pos |= any;
    race_block(s, n, v0, r);
  }
  return r;
}

// Run jobs over (job, chunk) tasks in parallel and merge each job's chunks.
template <typename in_t, typename acc_t>
std::vector<Race<acc_t>> run_races(const std::vector<RaceJob<in_t, acc_t>>& jobs, int64_t V) {
  const int64_t nj = static_cast<int64_t>(jobs.size());
  std::vector<Race<acc_t>> out(nj);
  if (nj == 0) return out;
  const Plan pl = plan_chunks(nj, V, 4096);
  std::vector<Race<acc_t>> part(nj * pl.nch);
  parallel_tasks(nj * pl.nch, pl.csz, [&](int64_t t0, int64_t t1) {
    std::unique_ptr<Scratch<acc_t>> sc(new Scratch<acc_t>);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j = t / pl.nch, c = t % pl.nch;
      const int64_t lo = c * pl.csz, hi = std::min(V, lo + pl.csz);
      if (lo < hi) part[t] = race_chunk(jobs[j], lo, hi, *sc);
    }
  });
  for (int64_t j = 0; j < nj; ++j) out[j] = merge_races(part.data() + j * pl.nch, pl.nch);
  return out;
}

// The second pass: TV(q, p) (opt) or eta = sum_{v not in A} q(v) (family B), at T > 0.
template <typename in_t, typename acc_t>
struct SumJob {
  int64_t b, i;
  bool tv;
  const in_t *zq, *zp, *za;
  PosStats<acc_t> sq, sp, sa;
  acc_t T, thr;
};

template <typename in_t, typename acc_t>
double sum_chunk(const SumJob<in_t, acc_t>& job, int64_t lo, int64_t hi, Scratch<acc_t>& sc) {
  double total = 0.0;
  for (int64_t v0 = lo; v0 < hi; v0 += kBlock) {
    const int64_t n = std::min(kBlock, hi - v0);
    probs_block(load_block(job.zq + v0, n, sc.z0), n, v0, job.sq, job.T, sc.q);
    const acc_t* q = sc.q;
    acc_t part = 0;
    if (job.tv) {
      probs_block(load_block(job.zp + v0, n, sc.z1), n, v0, job.sp, job.T, sc.p);
      const acc_t* p = sc.p;
#pragma omp simd reduction(+ : part)
      for (int64_t i = 0; i < n; ++i) {
        const acc_t d = q[i] - p[i];
        part += d > acc_t(0) ? d : acc_t(0);
      }
    } else {
      unscaled_block(load_block(job.za + v0, n, sc.z2), n, job.sa, sc.pa);
      const acc_t* pa = sc.pa;
      const acc_t thr = job.thr;
#pragma omp simd reduction(+ : part)
      for (int64_t i = 0; i < n; ++i) part += pa[i] >= thr ? acc_t(0) : q[i];
    }
    total += static_cast<double>(part);
  }
  return total;
}

template <typename in_t, typename acc_t>
void verify_cpu_impl(const VerifyInputs& in, at::Tensor& tokens, at::Tensor& num_accepted, at::Tensor& deferred,
                     at::Tensor& accept_prob, at::Tensor& valid_out) {
  const int64_t B = in.B, K = in.K, V = in.V;
  const int rule = in.rule;
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
  const bool family_b = is_family_b(rule);

  // Row parameters (checks.alpha_rows_ok, finite T >= 0).
  std::vector<int64_t> n(B);
  std::vector<acc_t> T(B), alpha(B);
  for (int64_t b = 0; b < B; ++b) {
    n[b] = std::min<int64_t>(std::max<int64_t>(ndraft[b], 0), K);
    T[b] = temp_p[b];
    alpha[b] = alpha_p[b];
    const bool t_ok = (T[b] - T[b]) == acc_t(0) && T[b] >= acc_t(0);
    valid[b] = t_ok && alpha_ok(rule, alpha[b]);
  }

  // 1. Statistics of every used position of the valid rows.
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

  // 2. Per drafted token: probabilities at x, the rule's decision, and which positions need a
  //    second pass.
  std::vector<acc_t> a(B * K, acc_t(0)), qx(B * K, acc_t(0)), px(B * K, acc_t(0)), tv_eta(B * K, acc_t(0));
  std::vector<char> defer(B * K, 0), in_a(B * K, 0), x_ok(B * K, 0);
  std::vector<SumJob<in_t, acc_t>> sums;
  auto set_accept = [&](int64_t b, int64_t i) {  // a_i once tv / eta are known
    const int64_t k = b * K + i;
    const acc_t al = alpha[b];
    if (!x_ok[k]) {
      a[k] = acc_t(0);
    } else if (rule == kLossy) {
      a[k] = ratio(px[k], mul_rn(acc_t(1) - al, qx[k]));
    } else if (family_b) {
      a[k] = (in_a[k] && qx[k] > acc_t(0)) ? acc_t(1) : ratio(tv_eta[k] * px[k], qx[k]);
    } else {
      a[k] = defer[k] ? ratio(px[k], qx[k]) : (qx[k] > acc_t(0) ? acc_t(1) : acc_t(0));
    }
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
      const acc_t max_qh = acc_t(1) / sq.S1, max_ph = acc_t(1) / sp.S1;
      if (rule == kLossy) {
        defer[k] = 1;
      } else if (family_b) {
        const bool reads_q = token_set_reads_q(rule);
        const PosStats<acc_t>& sa = reads_q ? sq : sp;
        const in_t* ra = reads_q ? rq : rp;
        const acc_t thr = token_threshold(rule, al, max_ph);
        auto member = [&](int64_t v) { return sc_exp(static_cast<acc_t>(ra[v]) - sa.M) / sa.S1 >= thr; };
        in_a[k] = x_ok[k] && member(xv);
        defer[k] = !in_a[k];
        if (!(in_a[k] && qx[k] > acc_t(0))) {  // eta is read: by a_i, or by the residual here
          if (Tb == acc_t(0)) {
            tv_eta[k] = member(sq.amax) ? acc_t(0) : acc_t(1);  // q is one-hot at its argmax
          } else {
            sums.push_back({b, i, false, rq, rp, ra, sq, sp, sa, Tb, thr});
            continue;
          }
        }
      } else if (rule == kOpt) {
        if (Tb == acc_t(0)) {
          tv_eta[k] = sq.amax != sp.amax ? acc_t(1) : acc_t(0);
        } else {
          sums.push_back({b, i, true, rq, rp, nullptr, sq, sp, sq, Tb, acc_t(0)});
          continue;
        }
        defer[k] = family_a_defers(rule, al, max_qh, max_ph, tv_eta[k]);
      } else {
        defer[k] = family_a_defers(rule, al, max_qh, max_ph, acc_t(0));
      }
      set_accept(b, i);
    }
  }
  if (!sums.empty()) {
    const int64_t nj = static_cast<int64_t>(sums.size());
    const Plan pl = plan_chunks(nj, V);
    std::vector<double> part(nj * pl.nch, 0.0);
    parallel_tasks(nj * pl.nch, pl.csz, [&](int64_t t0, int64_t t1) {
      std::unique_ptr<Scratch<acc_t>> sc(new Scratch<acc_t>);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t j = t / pl.nch, c = t % pl.nch;
        const int64_t lo = c * pl.csz, hi = std::min(V, lo + pl.csz);
        if (lo < hi) part[t] = sum_chunk(sums[j], lo, hi, *sc);
      }
    });
    for (int64_t j = 0; j < nj; ++j) {
      double s = 0.0;
      for (int64_t c = 0; c < pl.nch; ++c) s += part[j * pl.nch + c];
      const SumJob<in_t, acc_t>& job = sums[j];
      const int64_t k = job.b * K + job.i;
      tv_eta[k] = static_cast<acc_t>(s);
      if (job.tv) {
        const acc_t max_qh = acc_t(1) / job.sq.S1, max_ph = acc_t(1) / job.sp.S1;
        defer[k] = family_a_defers(rule, alpha[job.b], max_qh, max_ph, tv_eta[k]);
      }
      set_accept(job.b, job.i);
    }
  }

  // 3. Accept loop, and the race each row needs.
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
    if (mb == n[b]) {  // bonus from p_n
      if (T[b] == acc_t(0)) {
        emitted[b] = ps[b * (K + 1) + mb].amax;
        continue;
      }
      job.kind = kBonus;
      job.zp = zp.row(b, mb);
    } else {  // residual at position mb
      const int64_t k = b * K + mb;
      job.zq = zq.row(b, mb);
      job.zp = zp.row(b, mb);
      job.sq = qs[k];
      job.sp = ps[b * (K + 1) + mb];
      if (family_b) {
        const bool reads_q = token_set_reads_q(rule);
        job.kind = kResB;
        job.za = reads_q ? job.zq : job.zp;
        job.sa = reads_q ? job.sq : job.sp;
        job.thr = token_threshold(rule, alpha[b], acc_t(1) / job.sp.S1);
        job.eta = tv_eta[k];
      } else if (rule == kLossy || defer[k]) {
        job.kind = kResP;
      } else {
        job.kind = kFallQ;  // pi = q: w = 0 everywhere
      }
    }
    races.push_back(job);
  }
  std::vector<Race<acc_t>> res = run_races(races, V);
  std::vector<RaceJob<in_t, acc_t>> fallbacks;
  for (size_t j = 0; j < races.size(); ++j) {
    const RaceJob<in_t, acc_t>& job = races[j];
    if ((job.kind == kResP || job.kind == kResB) && !res[j].any_pos) {
      RaceJob<in_t, acc_t> fb = job;
      fb.kind = job.kind == kResP ? kFallP : kFallB;
      fallbacks.push_back(fb);
    } else {
      emitted[job.b] = res[j].idx;
    }
  }
  std::vector<Race<acc_t>> fres = run_races(fallbacks, V);
  for (size_t j = 0; j < fallbacks.size(); ++j) emitted[fallbacks[j].b] = fres[j].idx;

  // 4. Outputs (preallocated: tokens -1, the rest zero).
  for (int64_t b = 0; b < B; ++b) {
    if (!valid[b]) continue;
    for (int64_t i = 0; i < m[b]; ++i) tok[b * (K + 1) + i] = x[b * K + i];
    tok[b * (K + 1) + m[b]] = std::min<int64_t>(std::max<int64_t>(emitted[b], 0), V - 1);
    nacc[b] = m[b];
    for (int64_t i = 0; i < n[b]; ++i) {
      defer_out[b * K + i] = defer[b * K + i] != 0;
      ap_out[b * K + i] = static_cast<float>(a[b * K + i]);
    }
  }
}

VerifyResult verify_native_cpu(const at::Tensor& draft_logits, const at::Tensor& target_logits,
                               const at::Tensor& draft_tokens, int64_t rule, const at::Tensor& alpha,
                               const at::Tensor& temperature, const at::Tensor& seed, const at::Tensor& offset,
                               const at::Tensor& num_draft_tokens, int64_t vocab_size) {
  const VerifyInputs in = check_verify_inputs(draft_logits, target_logits, draft_tokens, rule, alpha, temperature,
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
