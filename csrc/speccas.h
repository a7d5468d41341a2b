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

// Shape/dtype/device checks shared by the CPU and CUDA implementations. Returns the logits with a
// contiguous last dimension (a copy only when it was not).
struct VerifyInputs {
  at::Tensor zq, zp, x, alpha, temperature, seed, offset, n;
  int64_t B, K, V;
  RuleArgs rule;
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

inline VerifyInputs check_verify_inputs(const at::Tensor& draft_logits, const at::Tensor& target_logits,
                                        const at::Tensor& draft_tokens, at::IntArrayRef rule,
                                        at::ArrayRef<double> alpha_range, const at::Tensor& alpha,
                                        const at::Tensor& temperature, const at::Tensor& seed,
                                        const at::Tensor& offset, const at::Tensor& num_draft_tokens,
                                        int64_t vocab_size) {
  CHECK_DIM(draft_logits, 3);
  CHECK_DIM(target_logits, 3);
  CHECK_DIM(draft_tokens, 2);
  const int64_t B = draft_logits.size(0), K = draft_logits.size(1);
  CHECK_SHAPE(target_logits, B, K + 1, target_logits.size(2));
  CHECK_SHAPE(draft_tokens, B, K);
  for (const at::Tensor* t : {&alpha, &temperature, &seed, &offset, &num_draft_tokens}) {
    SPECCAS_CHECK(t->dim() == 1 && t->size(0) == B, "per-row parameters must be [B] tensors with B = ", B,
                  ", got ", t->sizes());
  }
  const auto dev = draft_logits.device();
  CHECK_DEVICE(target_logits, dev);
  CHECK_DEVICE(draft_tokens, dev);
  CHECK_DEVICE(alpha, dev);
  CHECK_DEVICE(temperature, dev);
  CHECK_DEVICE(seed, dev);
  CHECK_DEVICE(offset, dev);
  CHECK_DEVICE(num_draft_tokens, dev);
  SPECCAS_CHECK(draft_logits.scalar_type() == target_logits.scalar_type(),
                "draft_logits and target_logits must have one dtype, got ", draft_logits.scalar_type(), " and ",
                target_logits.scalar_type());
  const auto st = draft_logits.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf || st == at::kDouble,
                   "speccas: logits must be float32, bfloat16, float16 or float64, got ", st);
  const auto pdt = st == at::kDouble ? at::kDouble : at::kFloat;
  CHECK_DTYPE(alpha, pdt);
  CHECK_DTYPE(temperature, pdt);
  CHECK_DTYPE(draft_tokens, at::kLong);
  CHECK_DTYPE(seed, at::kLong);
  CHECK_DTYPE(offset, at::kLong);
  CHECK_DTYPE(num_draft_tokens, at::kLong);
  SPECCAS_CHECK(vocab_size >= 1 && vocab_size <= draft_logits.size(2) && vocab_size <= target_logits.size(2),
                "vocab_size must be in [1, min(V_draft, V_target)], got ", vocab_size);
  auto last_contig = [](const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); };
  return VerifyInputs{last_contig(draft_logits), last_contig(target_logits), draft_tokens.contiguous(),
                      alpha.contiguous(), temperature.contiguous(), seed.contiguous(), offset.contiguous(),
                      num_draft_tokens.contiguous(), B, K, vocab_size, check_rule_args(rule, alpha_range)};
}

// The outputs of verify_native before any row is decided, shared by the CPU and CUDA
// implementations: (tokens [B, K + 1] int64 all -1, num_accepted [B] int64, deferred [B, K] bool,
// accept_prob [B, K] float32, valid [B] bool), all zero but tokens, on the logits' device.
inline VerifyResult empty_verify_outputs(const VerifyInputs& in, const at::TensorOptions& opts) {
  return VerifyResult{at::full({in.B, in.K + 1}, -1, opts.dtype(at::kLong)), at::zeros({in.B}, opts.dtype(at::kLong)),
                      at::zeros({in.B, in.K}, opts.dtype(at::kBool)), at::zeros({in.B, in.K}, opts.dtype(at::kFloat)),
                      at::zeros({in.B}, opts.dtype(at::kBool))};
}

inline void check_sample_inputs(const at::Tensor& logits, const at::Tensor& temperature, const at::Tensor& seed,
                                const at::Tensor& offset, int64_t vocab_size) {
  CHECK_DIM(logits, 2);
  const int64_t B = logits.size(0);
  for (const at::Tensor* t : {&temperature, &seed, &offset}) {
    SPECCAS_CHECK(t->dim() == 1 && t->size(0) == B, "per-row parameters must be [B] tensors with B = ", B,
                  ", got ", t->sizes());
  }
  const auto dev = logits.device();
  CHECK_DEVICE(temperature, dev);
  CHECK_DEVICE(seed, dev);
  CHECK_DEVICE(offset, dev);
  const auto st = logits.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kBFloat16 || st == at::kHalf || st == at::kDouble,
                   "speccas: logits must be float32, bfloat16, float16 or float64, got ", st);
  CHECK_DTYPE(temperature, st == at::kDouble ? at::kDouble : at::kFloat);
  CHECK_DTYPE(seed, at::kLong);
  CHECK_DTYPE(offset, at::kLong);
  SPECCAS_CHECK(vocab_size >= 1 && vocab_size <= logits.size(1), "vocab_size must be in [1, V], got ", vocab_size);
}

}  // namespace speccas
