// Shared declarations and argument checks of the native ops (schemas in ops.cpp).
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

#include <tuple>

#include "rules.h"

#define SPECCAS_CHECK(cond, ...) TORCH_CHECK_VALUE(cond, "speccas: ", __VA_ARGS__)
#define CHECK_DIM(x, d) SPECCAS_CHECK((x).dim() == (d), #x " must be a " #d "-D tensor, got ", (x).dim(), "-D")
#define CHECK_SHAPE(x, ...)                                                                         \
  SPECCAS_CHECK((x).sizes() == at::IntArrayRef({__VA_ARGS__}), #x " must have shape [" #__VA_ARGS__ \
                "], got ", (x).sizes())
#define CHECK_DEVICE(x, dev) \
  SPECCAS_CHECK((x).device() == (dev), #x " is on ", (x).device(), ", expected ", (dev))
#define CHECK_DTYPE(x, dt) \
  TORCH_CHECK_TYPE((x).scalar_type() == (dt), "speccas: " #x " must be ", (dt), ", got ", (x).scalar_type())
#define CHECK_LAST_CONTIGUOUS(x) SPECCAS_CHECK((x).stride(-1) == 1, #x " must be contiguous in its last dimension")

namespace speccas {

using VerifyResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// A per-row parameter as the ops receive it: a [B] tensor (defined), or one value for every row.
template <typename V>
struct RowParam {
  at::Tensor t;  // [B], contiguous, in the op's dtype; undefined: use v
  V v{};
  bool per_row() const { return t.defined(); }
};

// The arguments of verify_native after the checks shared by the CPU and CUDA implementations.
//
// Layouts: padded (zq [B, K, V_d] or undefined, zp [B, K + 1, V_t], x [B, K], n per row) or ragged (cu defined:
// zq [N, V_d] or undefined, zp [N + B, V_t], x [N], row b's n = cu[b + 1] - cu[b]). Address of drafter position
// (b, i): padded b * sqB + i * sqL; ragged (cu[b] + i) * sqL. Target (b, i): padded b * spB + i * spL; ragged
// (cu[b] + b + i) * spL. zq undefined: token-only drafts (q one-hot at the draft).
// The logits are last-dim contiguous (a copy only when they were not) and of one dtype (converted to the
// promotion of the two when the drafter's and the target's differ). Per-row floats are in the compute dtype
// (double for double logits, else float), integers int64. Filters off: top_k 0, top_p 1, min_p 0.
struct VerifyInputs {
  at::Tensor zq, zp, x, cu;
  int64_t sqB = 0, sqL = 0, spB = 0, spL = 0;  // element strides (sqB, spB unused when ragged)
  RowParam<int64_t> n, top_k, seed, offset;
  RowParam<double> alpha, temperature, top_p, min_p;
  bool filters = false;  // any filter may be on: the cutoffs must be computed
  int64_t B = 0, K = 0, V = 0;
  RuleArgs rule;
  bool ragged() const { return cu.defined(); }
  bool token_drafts() const { return !zq.defined(); }
  at::ScalarType compute_dtype() const { return zp.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }
};

// The rule's row of speccas_kernels/rules.py as the op receives it (native.rule_args):
// rule = [code, family, needs_tv, reads_qh, reads_ph, uses_alpha, high_open], alpha_range = [low, high].
inline RuleArgs check_rule_args(at::IntArrayRef rule, at::ArrayRef<double> alpha_range) {
  SPECCAS_CHECK(rule.size() == 7 && alpha_range.size() == 2,
                "rule must be [code, family, needs_tv, reads_qh, reads_ph, uses_alpha, high_open] and alpha_range "
                "[low, high], got ", rule, " and ", alpha_range);
  RuleArgs r;
  r.code = static_cast<int>(rule[0]);
  r.family = static_cast<int>(rule[1]);
  r.needs_tv = rule[2] != 0;
  r.reads_qh = rule[3] != 0;
  r.reads_ph = rule[4] != 0;
  r.uses_alpha = rule[5] != 0;
  r.high_open = rule[6] != 0;
  r.alpha_lo = alpha_range[0];
  r.alpha_hi = alpha_range[1];
  SPECCAS_CHECK(rule_family(r.code) >= 0 && rule_family(r.code) == r.family, "rule code ", r.code, " (family ",
                r.family, ") is not a rule this extension was built with: rebuild it after changing rules.py");
  SPECCAS_CHECK(r.family != kFamilyB || r.reads_qh || r.reads_ph, "a token-set rule must read qh or ph");
  return r;
}

inline void check_logits_dtype(const at::Tensor& t, const char* name) {
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf || st == at::kDouble, "speccas: ",
                   name, " must be float32, bfloat16, float16 or float64, got ", st);
}

template <typename V>
inline RowParam<V> check_row(const c10::optional<at::Tensor>& t, V value, int64_t B, at::ScalarType dt,
                             const at::Device& dev, const char* name) {
  RowParam<V> r;
  r.v = value;
  if (t.has_value() && t->defined()) {
    SPECCAS_CHECK(t->dim() == 1 && t->size(0) == B, name, " must be a [B] tensor with B = ", B, ", got ",
                  t->sizes());
    SPECCAS_CHECK(t->device() == dev, name, " is on ", t->device(), ", expected ", dev);
    TORCH_CHECK_TYPE(t->scalar_type() == dt, "speccas: ", name, " must be ", dt, ", got ", t->scalar_type());
    r.t = t->contiguous();
  }
  return r;
}

inline VerifyInputs check_verify_inputs(
    const c10::optional<at::Tensor>& draft_logits, const at::Tensor& target_logits, const at::Tensor& draft_tokens,
    const c10::optional<at::Tensor>& num_draft_tokens, int64_t num_draft_tokens_value,
    const c10::optional<at::Tensor>& cu_num_draft_tokens, at::IntArrayRef rule, at::ArrayRef<double> alpha_range,
    const c10::optional<at::Tensor>& alpha, double alpha_value, const c10::optional<at::Tensor>& temperature,
    double temperature_value, const c10::optional<at::Tensor>& top_k, int64_t top_k_value,
    const c10::optional<at::Tensor>& top_p, double top_p_value, const c10::optional<at::Tensor>& min_p,
    double min_p_value, const c10::optional<at::Tensor>& seed, int64_t seed_value,
    const c10::optional<at::Tensor>& offset, int64_t offset_value, int64_t vocab_size, int64_t max_drafts) {
  VerifyInputs in;
  in.rule = check_rule_args(rule, alpha_range);
  const bool ragged = cu_num_draft_tokens.has_value() && cu_num_draft_tokens->defined();
  const bool has_q = draft_logits.has_value() && draft_logits->defined();
  const auto dev = target_logits.device();
  check_logits_dtype(target_logits, "target_logits");
  if (has_q) {
    check_logits_dtype(*draft_logits, "draft_logits");
    CHECK_DEVICE(*draft_logits, dev);
  }
  CHECK_DEVICE(draft_tokens, dev);
  CHECK_DTYPE(draft_tokens, at::kLong);
  if (ragged) {
    const at::Tensor& cu = *cu_num_draft_tokens;
    SPECCAS_CHECK(cu.device() == dev, "cu_num_draft_tokens is on ", cu.device(), ", expected ", dev);
    TORCH_CHECK_TYPE(cu.scalar_type() == at::kLong, "speccas: cu_num_draft_tokens must be ", at::kLong, ", got ",
                     cu.scalar_type());
    SPECCAS_CHECK(cu.dim() == 1 && cu.size(0) >= 1, "cu_num_draft_tokens must be [B + 1], got ", cu.sizes());
    CHECK_DIM(target_logits, 2);
    CHECK_DIM(draft_tokens, 1);
    in.B = cu.size(0) - 1;
    in.K = max_drafts;
    const int64_t N = draft_tokens.size(0);
    SPECCAS_CHECK(target_logits.size(0) == N + in.B, "target_logits must be [N + B, V] = [", N + in.B, ", V], got ",
                  target_logits.sizes());
    if (has_q) {
      CHECK_DIM(*draft_logits, 2);
      SPECCAS_CHECK(draft_logits->size(0) == N, "draft_logits must be [N, V] with N = ", N, ", got ",
                    draft_logits->sizes());
    }
    in.cu = cu.contiguous();
  } else {
    CHECK_DIM(target_logits, 3);
    CHECK_DIM(draft_tokens, 2);
    in.B = draft_tokens.size(0);
    in.K = draft_tokens.size(1);
    SPECCAS_CHECK(max_drafts == in.K, "max_drafts must be K = ", in.K, " for the padded layout, got ", max_drafts);
    CHECK_SHAPE(target_logits, in.B, in.K + 1, target_logits.size(2));
    if (has_q) {
      CHECK_DIM(*draft_logits, 3);
      CHECK_SHAPE(*draft_logits, in.B, in.K, draft_logits->size(2));
    }
  }
  SPECCAS_CHECK(in.K >= 0, "max_drafts must be >= 0, got ", in.K);
  const int64_t vq = has_q ? draft_logits->size(-1) : target_logits.size(-1);
  SPECCAS_CHECK(vocab_size >= 1 && vocab_size <= vq && vocab_size <= target_logits.size(-1),
                "vocab_size must be in [1, min(V_draft, V_target)], got ", vocab_size);
  in.V = vocab_size;
  // One logits dtype: the promotion of the two (a copy of the narrower one when they differ).
  at::ScalarType st = target_logits.scalar_type();
  if (has_q && draft_logits->scalar_type() != st) st = at::promote_types(st, draft_logits->scalar_type());
  auto prep = [&](const at::Tensor& t) {
    at::Tensor u = t.scalar_type() == st ? t : t.to(st);
    return u.stride(-1) == 1 ? u : u.contiguous();
  };
  in.zp = prep(target_logits);
  if (has_q) in.zq = prep(*draft_logits);
  in.x = draft_tokens.contiguous();
  if (ragged) {
    in.spL = in.zp.stride(0);
    if (has_q) in.sqL = in.zq.stride(0);
  } else {
    in.spB = in.zp.stride(0);
    in.spL = in.zp.stride(1);
    if (has_q) {
      in.sqB = in.zq.stride(0);
      in.sqL = in.zq.stride(1);
    }
  }
  const at::ScalarType fdt = in.compute_dtype();
  const int64_t B = in.B;
  in.n = check_row<int64_t>(num_draft_tokens, num_draft_tokens_value, B, at::kLong, dev, "num_draft_tokens");
  in.alpha = check_row<double>(alpha, alpha_value, B, fdt, dev, "alpha");
  in.temperature = check_row<double>(temperature, temperature_value, B, fdt, dev, "temperature");
  in.top_k = check_row<int64_t>(top_k, top_k_value, B, at::kLong, dev, "top_k");
  in.top_p = check_row<double>(top_p, top_p_value, B, fdt, dev, "top_p");
  in.min_p = check_row<double>(min_p, min_p_value, B, fdt, dev, "min_p");
  in.seed = check_row<int64_t>(seed, seed_value, B, at::kLong, dev, "seed");
  in.offset = check_row<int64_t>(offset, offset_value, B, at::kLong, dev, "offset");
  in.filters = in.top_k.per_row() || in.top_p.per_row() || in.min_p.per_row() || top_k_value != 0 ||
               top_p_value != 1.0 || min_p_value != 0.0;
  return in;
}

// The arguments of verify_native and verify_divergence_native (schemas in ops.cpp), as parameters and as the call
// that checks them: the CPU (verify_cpu.cpp) and CUDA (verify_cuda.cu) entry points.
#define SPECCAS_VERIFY_PARAMS                                                                                   \
  const c10::optional<at::Tensor>& draft_logits, const at::Tensor& target_logits, const at::Tensor& draft_tokens,  \
      const c10::optional<at::Tensor>& num_draft_tokens, int64_t num_draft_tokens_value,                           \
      const c10::optional<at::Tensor>& cu_num_draft_tokens, at::IntArrayRef rule, at::ArrayRef<double> alpha_range, \
      const c10::optional<at::Tensor>& alpha, double alpha_value, const c10::optional<at::Tensor>& temperature,     \
      double temperature_value, const c10::optional<at::Tensor>& top_k, int64_t top_k_value,                       \
      const c10::optional<at::Tensor>& top_p, double top_p_value, const c10::optional<at::Tensor>& min_p,          \
      double min_p_value, const c10::optional<at::Tensor>& seed, int64_t seed_value,                               \
      const c10::optional<at::Tensor>& offset, int64_t offset_value, int64_t vocab_size, int64_t max_drafts
#define SPECCAS_CHECK_VERIFY_INPUTS()                                                                                 \
  check_verify_inputs(draft_logits, target_logits, draft_tokens, num_draft_tokens, num_draft_tokens_value,            \
                      cu_num_draft_tokens, rule, alpha_range, alpha, alpha_value, temperature, temperature_value,     \
                      top_k, top_k_value, top_p, top_p_value, min_p, min_p_value, seed, seed_value, offset,           \
                      offset_value, vocab_size, max_drafts)

// The outputs of verify_native before any row is decided, shared by the CPU and CUDA
// implementations: (tokens [B, K + 1] int64 all -1, num_accepted [B] int64, deferred [B, K] bool,
// accept_prob [B, K] float32, valid [B] bool), all zero but tokens, on the logits' device.
inline VerifyResult empty_verify_outputs(const VerifyInputs& in, const at::TensorOptions& opts) {
  return VerifyResult{at::full({in.B, in.K + 1}, -1, opts.dtype(at::kLong)), at::zeros({in.B}, opts.dtype(at::kLong)),
                      at::zeros({in.B, in.K}, opts.dtype(at::kBool)), at::zeros({in.B, in.K}, opts.dtype(at::kFloat)),
                      at::zeros({in.B}, opts.dtype(at::kBool))};
}

// The arguments of sample_native after the checks (logits [B, V], last dim contiguous).
struct SampleInputs {
  at::Tensor z;
  RowParam<int64_t> top_k, seed, offset;
  RowParam<double> temperature, top_p, min_p;
  bool filters = false;
  int64_t B = 0, V = 0;
};

inline SampleInputs check_sample_inputs(const at::Tensor& logits, const c10::optional<at::Tensor>& temperature,
                                        double temperature_value, const c10::optional<at::Tensor>& top_k,
                                        int64_t top_k_value, const c10::optional<at::Tensor>& top_p,
                                        double top_p_value, const c10::optional<at::Tensor>& min_p,
                                        double min_p_value, const c10::optional<at::Tensor>& seed,
                                        int64_t seed_value, const c10::optional<at::Tensor>& offset,
                                        int64_t offset_value, int64_t vocab_size) {
  CHECK_DIM(logits, 2);
  check_logits_dtype(logits, "logits");
  SampleInputs in;
  in.B = logits.size(0);
  SPECCAS_CHECK(vocab_size >= 1 && vocab_size <= logits.size(1), "vocab_size must be in [1, V], got ", vocab_size);
  in.V = vocab_size;
  in.z = logits.stride(-1) == 1 ? logits : logits.contiguous();
  const auto dev = logits.device();
  const at::ScalarType fdt = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  in.temperature = check_row<double>(temperature, temperature_value, in.B, fdt, dev, "temperature");
  in.top_k = check_row<int64_t>(top_k, top_k_value, in.B, at::kLong, dev, "top_k");
  in.top_p = check_row<double>(top_p, top_p_value, in.B, fdt, dev, "top_p");
  in.min_p = check_row<double>(min_p, min_p_value, in.B, fdt, dev, "min_p");
  in.seed = check_row<int64_t>(seed, seed_value, in.B, at::kLong, dev, "seed");
  in.offset = check_row<int64_t>(offset, offset_value, in.B, at::kLong, dev, "offset");
  in.filters = in.top_k.per_row() || in.top_p.per_row() || in.min_p.per_row() || top_k_value != 0 ||
               top_p_value != 1.0 || min_p_value != 0.0;
  return in;
}

}  // namespace speccas
