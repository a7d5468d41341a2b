// sample_native on CPU: the drafter step of reference.sample_args.
//
//   token = argmax_v (z(v) - M) * inv_t + G(v) over the kept entries,  G = gumbel(seed, offset, STREAM_DRAFT, v)
//           (plain argmax of z at T = 0, where the filters are ignored)
//
// Phases (SPEC.md section 9): stats (max, NaN / +inf / all -inf, argmax; parallel over (row, vocabulary
// chunk)), filters (the cutoff of top-k / top-p / min-p, one task per filtered row), race (parallel over
// (row, chunk)), emit (the chunks merged, ties to the lowest index). Rows with bad logits, T < 0 / NaN / inf
// or a filter value out of range get -1.
#include <vector>

#include "cpu_common.h"
#include "speccas.h"

namespace speccas {
namespace cpu {
namespace {

template <typename in_t, typename acc_t>
void sample_cpu_impl(const SampleInputs& in, at::Tensor& out) {
  const int64_t B = in.B, V = in.V;
  const in_t* z = in.z.data_ptr<in_t>();
  const int64_t sB = in.z.stride(0);
  const Rows<acc_t> temp = rows_of<acc_t>(in.temperature);
  const Rows<int64_t> seed = rows_of<int64_t>(in.seed), offset = rows_of<int64_t>(in.offset);
  const FilterRows<acc_t> filters = filter_rows<acc_t>(in);
  int64_t* tok = out.data_ptr<int64_t>();

  // Phase "stats" over the rows whose parameters are valid.
  std::vector<int64_t> rows;
  std::vector<StatsJob<in_t, acc_t>> jobs;
  for (int64_t b = 0; b < B; ++b) {
    const acc_t T = temp[b];
    if (!((T - T) == acc_t(0) && T >= acc_t(0) && filters.ok(b))) continue;
    rows.push_back(b);
    jobs.push_back({z + b * sB, inv_temperature(T), false, false, T == acc_t(0)});
  }
  std::vector<PosStats<acc_t>> st = run_stats(jobs, V);

  // Phase "filters", and the rows that race (T > 0).
  std::vector<FilterJob<in_t, acc_t>> fjobs;
  std::vector<size_t> racing;
  for (size_t j = 0; j < rows.size(); ++j) {
    const int64_t b = rows[j];
    if (st[j].bad) continue;
    if (temp[b] == acc_t(0)) {
      tok[b] = st[j].amax;
      continue;
    }
    const RowFilter<acc_t> f = filters.at(b, V);
    if (f.on) fjobs.push_back({jobs[j].z, f, &st[j]});
    racing.push_back(j);
  }
  run_filters(fjobs, V);

  // Phases "race" and "emit".
  const std::vector<Race<acc_t>> res = run_races<acc_t, Race<acc_t>>(
      racing, V, [&](size_t j, int64_t lo, int64_t hi, Scratch<acc_t>& sc) {
        const int64_t b = rows[j];
        return scaled_race_chunk(jobs[j].z, st[j], seed[b], offset[b], kStreamDraft, lo, hi, sc);
      });
  for (size_t r = 0; r < racing.size(); ++r) tok[rows[racing[r]]] = clamp64(res[r].idx, 0, V - 1);
}

at::Tensor sample_native_cpu(const at::Tensor& logits, const c10::optional<at::Tensor>& temperature,
                             double temperature_value, const c10::optional<at::Tensor>& top_k, int64_t top_k_value,
                             const c10::optional<at::Tensor>& top_p, double top_p_value,
                             const c10::optional<at::Tensor>& min_p, double min_p_value,
                             const c10::optional<at::Tensor>& seed, int64_t seed_value,
                             const c10::optional<at::Tensor>& offset, int64_t offset_value, int64_t vocab_size) {
  const SampleInputs in = check_sample_inputs(logits, temperature, temperature_value, top_k, top_k_value, top_p,
                                              top_p_value, min_p, min_p_value, seed, seed_value, offset, offset_value,
                                              vocab_size);
  at::Tensor out = at::full({in.B}, -1, logits.options().dtype(at::kLong));
  if (in.B > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, in.z.scalar_type(), "sample_native_cpu", [&] {
      using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      sample_cpu_impl<scalar_t, acc_t>(in, out);
    });
  }
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace speccas

TORCH_LIBRARY_IMPL(speccas, CPU, m) { m.impl("sample_native", &speccas::cpu::sample_native_cpu); }
