// sample_native on CPU: the drafter step of reference.sample_args, one pass over V per row.
//
//   token = argmax_v z(v) + T G(v),  G = gumbel(seed, offset, STREAM_DRAFT, v)   (plain argmax at T = 0)
//
// Rows with NaN/+inf or all -inf logits, or T < 0 / NaN / inf, get -1. Parallel over (row,
// vocabulary chunk); the validity flags are gathered in the same pass as the race.
#include <vector>

#include "cpu_common.h"
#include "speccas.h"

namespace speccas {
namespace cpu {
namespace {

template <typename in_t, typename acc_t>
Race<acc_t> sample_chunk(const in_t* z, int64_t lo, int64_t hi, acc_t T, int64_t seed, int64_t pos,
                         Scratch<acc_t>& sc) {
  Race<acc_t> r;
  const acc_t inf = std::numeric_limits<acc_t>::infinity();
  for (int64_t v0 = lo; v0 < hi; v0 += kBlock) {
    const int64_t n = std::min(kBlock, hi - v0);
    const acc_t* x = load_block(z + v0, n, sc.z0);
    int bad = 0;
#pragma omp simd reduction(| : bad)
    for (int64_t i = 0; i < n; ++i) bad |= static_cast<int>(x[i] != x[i]) | static_cast<int>(x[i] == inf);
    r.bad |= bad;
    if (T == acc_t(0)) {
      race_block(x, n, v0, r);
    } else {
      gumbel_block(seed, pos, kStreamDraft, v0, n, sc.g, sc.bits);
      const float* g = sc.g;
      acc_t* s = sc.s;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) s[i] = x[i] + T * static_cast<acc_t>(g[i]);
      race_block(s, n, v0, r);
    }
  }
  return r;
}

template <typename in_t, typename acc_t>
void sample_cpu_impl(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& seed_t,
                     const at::Tensor& offset_t, int64_t V, at::Tensor& out) {
  const int64_t B = logits.size(0);
  const in_t* z = logits.data_ptr<in_t>();
  const int64_t sB = logits.stride(0);
  const acc_t* T = temperature.data_ptr<acc_t>();
  const int64_t* seed = seed_t.data_ptr<int64_t>();
  const int64_t* offset = offset_t.data_ptr<int64_t>();
  int64_t* tok = out.data_ptr<int64_t>();
  std::vector<char> row_ok(B);
  std::vector<int64_t> rows;
  for (int64_t b = 0; b < B; ++b) {
    row_ok[b] = (T[b] - T[b]) == acc_t(0) && T[b] >= acc_t(0);
    if (row_ok[b]) rows.push_back(b);
  }
  const int64_t nr = static_cast<int64_t>(rows.size());
  if (nr == 0) return;
  const Plan pl = plan_chunks(nr, V, 4096);
  std::vector<Race<acc_t>> part(nr * pl.nch);
  parallel_tasks(nr * pl.nch, pl.csz, [&](int64_t t0, int64_t t1) {
    std::unique_ptr<Scratch<acc_t>> sc(new Scratch<acc_t>);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = rows[t / pl.nch], c = t % pl.nch;
      const int64_t lo = c * pl.csz, hi = std::min(V, lo + pl.csz);
      if (lo < hi) part[t] = sample_chunk<in_t, acc_t>(z + b * sB, lo, hi, T[b], seed[b], offset[b], *sc);
    }
  });
  for (int64_t j = 0; j < nr; ++j) {
    const Race<acc_t> r = merge_races(part.data() + j * pl.nch, pl.nch);
    // All -inf: the best score is -inf (a finite logit plus finite noise is finite).
    const bool ok = !r.bad && r.best != neg_inf<acc_t>() && r.idx >= 0;
    tok[rows[j]] = ok ? std::min<int64_t>(r.idx, V - 1) : -1;
  }
}

at::Tensor sample_native_cpu(const at::Tensor& logits_in, const at::Tensor& temperature, const at::Tensor& seed,
                             const at::Tensor& offset, int64_t vocab_size) {
  check_sample_inputs(logits_in, temperature, seed, offset, vocab_size);
  const at::Tensor logits = logits_in.stride(-1) == 1 ? logits_in : logits_in.contiguous();
  at::Tensor out = at::full({logits.size(0)}, -1, logits.options().dtype(at::kLong));
  const at::Tensor T = temperature.contiguous(), s = seed.contiguous(), o = offset.contiguous();
  if (logits.size(0) > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "sample_native_cpu", [&] {
      using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      sample_cpu_impl<scalar_t, acc_t>(logits, T, s, o, vocab_size, out);
    });
  }
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace speccas

TORCH_LIBRARY_IMPL(speccas, CPU, m) { m.impl("sample_native", &speccas::cpu::sample_native_cpu); }
