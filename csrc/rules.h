// The decision layer shared by the CPU (verify_cpu.cpp) and CUDA (verify_cuda.cu) ops: the formulas of
// speccas_kernels/rules.py (SPEC.md section 3) as scalar __host__ __device__ functions.
//
// Nothing of the rule table is restated here: the codes come from the header setup.py generates from
// rules.py (speccas_rules_gen.h), and the family, flags and alpha range arrive as op arguments
// (RuleArgs, checked against rule_family() when an op is called). Every switch on a rule names every
// rule and has no default, so a rule added to rules.py without its formula here is a compile error
// (-Werror=switch in setup.py); a code that reaches a switch for another family traps.
//
// Every product is written as the reference (speccas_kernels/reference.py) evaluates it, one rounding per
// tensor op: `mul_rn` keeps nvcc from fusing a product into the following addition (an FMA would round
// once where the reference rounds twice); the CPU build compiles with -ffp-contract=off instead.
#pragma once

#include <cstdint>
#include <cstdlib>

#include "philox.h"
#include "speccas_rules_gen.h"

#if defined(__CUDA_ARCH__)
#define SPECCAS_UNREACHABLE() __trap()
#else
#define SPECCAS_UNREACHABLE() std::abort()
#endif

namespace speccas {

// A rule's row of rules.py as the native op receives it (see speccas_kernels/native.py).
struct RuleArgs {
  int code = 0;
  int family = 0;        // FamilyCode
  bool needs_tv = false;  // reads TV(q, p): a second look over V
  bool reads_qh = false;  // family B: the token set reads q^(v)
  bool reads_ph = false;  // family B: the token set reads p^(v)
  bool uses_alpha = true;
  bool high_open = false;
  double alpha_lo = 0.0, alpha_hi = 0.0;
};

// The family a code belongs to, for the check at the op's entry (-1: unknown code).
inline int rule_family(int code) {
  switch (static_cast<RuleCode>(code)) {
    case kRule_speculative:
    case kRule_chow:
    case kRule_diff:
    case kRule_opt:
    case kRule_ensemble:
      return kFamilyA;
    case kRule_token_v1:
    case kRule_token_v2:
    case kRule_token_v3:
      return kFamilyB;
    case kRule_lossy:
      return kFamilyLossy;
  }
  return -1;
}

// rules.alpha_in_range / checks.alpha_rows_ok, with the range of the rule's row.
template <typename T>
SPECCAS_HD bool alpha_ok(const RuleArgs& r, T a) {
  if (!r.uses_alpha) return true;
  const bool finite = (a - a) == T(0);  // false for NaN and +-inf
  if (!finite || a < static_cast<T>(r.alpha_lo)) return false;
  return r.high_open ? a < static_cast<T>(r.alpha_hi) : a <= static_cast<T>(r.alpha_hi);
}

SPECCAS_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

SPECCAS_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// reference._ratio: min(1, num / den), 0 where den <= 0.
template <typename T>
SPECCAS_HD T ratio(T num, T den) {
  if (!(den > T(0))) return T(0);
  const T r = num / den;
  return r > T(1) ? T(1) : r;
}

// Family A: the blend weight r of pi = (1 - r) q + r p (0 or 1 for a deferral bit).
template <typename T>
SPECCAS_HD T blend_weight(int code, T alpha, T max_qh, T max_ph, T tv) {
  switch (static_cast<RuleCode>(code)) {
    case kRule_speculative: return T(1);
    case kRule_chow: return max_qh < T(1) - alpha ? T(1) : T(0);
    case kRule_diff: return max_qh < max_ph - alpha ? T(1) : T(0);
    case kRule_opt: return max_qh < max_ph - mul_rn(alpha, tv) ? T(1) : T(0);
    case kRule_ensemble: return T(1) - alpha;
    case kRule_token_v1:
    case kRule_token_v2:
    case kRule_token_v3:
    case kRule_lossy:
      break;  // not a blend
  }
  SPECCAS_UNREACHABLE();
  return T(0);
}

// Family B: v in A, from the unscaled q^(v) / p^(v) the rule reads and max p^.
template <typename T>
SPECCAS_HD bool in_token_set(int code, T alpha, T qh, T ph, T max_ph) {
  switch (static_cast<RuleCode>(code)) {
    case kRule_token_v1: return qh >= max_ph - alpha;
    case kRule_token_v2: return ph >= max_ph - alpha;
    case kRule_token_v3: return ph >= mul_rn(T(1) - alpha, max_ph);
    case kRule_speculative:
    case kRule_chow:
    case kRule_diff:
    case kRule_opt:
    case kRule_ensemble:
    case kRule_lossy:
      break;  // no token set
  }
  SPECCAS_UNREACHABLE();
  return false;
}

// `w` below is the per-position quantity that, with the family, fixes pi: family A the weight r,
// family B eta = q(not A) (lossy: unused).
//
// pi(v) from the sampling probabilities q(v), p(v) (and membership in A for family B).
template <typename T>
SPECCAS_HD T blended(int family, T w, bool in_a, T q, T p) {
  switch (static_cast<FamilyCode>(family)) {
    case kFamilyA: return mul_rn(T(1) - w, q) + mul_rn(w, p);
    case kFamilyB: return (in_a ? q : T(0)) + mul_rn(w, p);
    case kFamilyLossy: return p;
  }
  SPECCAS_UNREACHABLE();
  return T(0);
}

// The acceptance probability of a draft x with sampling probabilities qx, px (SPEC.md section 3).
template <typename T>
SPECCAS_HD T acceptance(int family, T alpha, T w, bool in_a, T qx, T px) {
  switch (static_cast<FamilyCode>(family)) {
    case kFamilyA: return ratio(blended(family, w, in_a, qx, px), qx);
    case kFamilyB: return (in_a && qx > T(0)) ? T(1) : ratio(mul_rn(w, px), qx);
    case kFamilyLossy: return ratio(px, mul_rn(T(1) - alpha, qx));
  }
  SPECCAS_UNREACHABLE();
  return T(0);
}

// reference.RESIDUAL_EPS: a residual whose mass sum_v max(0, pi - q) is at most this is rounding noise, and
// the rejected position draws from pi instead (SPEC.md section 4).
template <typename T>
SPECCAS_HD constexpr double residual_eps() {
  return sizeof(T) == sizeof(double) ? 1e-12 : 1e-5;
}

// True when the residual max(0, pi - q) is zero by construction (family A with r = 0: pi = q), so the
// rejected position's token is drawn from pi directly.
template <typename T>
SPECCAS_HD bool residual_is_empty(int family, T w) {
  return family == kFamilyA && w == T(0);
}

}  // namespace speccas
