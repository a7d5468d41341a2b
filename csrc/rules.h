// The rules of SPEC.md section 3 as scalar host/device functions (the one C++ copy of
// speccas_kernels/rules.py's codes and alpha ranges, and of the reference's formulas).
//
// Every comparison and product is written as the reference (speccas_kernels/reference.py)
// evaluates it, one rounding per tensor op: `mul_rn` keeps the compiler from fusing a product
// into the following subtraction (an FMA would round once where the reference rounds twice).
#pragma once

#include <cstdint>

#include "philox.h"

namespace speccas {

enum RuleCode : int {
  kSpeculative = 0,
  kChow = 1,
  kDiff = 2,
  kOpt = 3,
  kTokenV1 = 4,
  kTokenV2 = 5,
  kTokenV3 = 6,
  kLossy = 7,
  kNumRules = 8,
};

SPECCAS_HD bool is_family_b(int rule) { return rule == kTokenV1 || rule == kTokenV2 || rule == kTokenV3; }

// rules.py alpha_in_range / checks.alpha_rows_ok.
template <typename T>
SPECCAS_HD bool alpha_ok(int rule, T a) {
  const bool finite = (a - a) == T(0);  // false for NaN and +-inf
  switch (rule) {
    case kSpeculative: return true;
    case kChow: return finite && a >= T(0) && a <= T(1);
    case kDiff: return finite && a >= T(-1) && a <= T(1);
    case kOpt: return finite;
    case kTokenV1: return finite && a >= T(-1) && a <= T(1);
    case kTokenV2: return finite && a >= T(-1) && a <= T(1);
    case kTokenV3: return finite && a >= T(0) && a <= T(1);
    case kLossy: return finite && a >= T(0) && a < T(1);
    default: return false;
  }
}

SPECCAS_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  volatile float r = a * b;
  return r;
#endif
}

SPECCAS_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  volatile double r = a * b;
  return r;
#endif
}

// reference._ratio: min(1, num / den), 0 where den <= 0.
template <typename T>
SPECCAS_HD T ratio(T num, T den) {
  if (!(den > T(0))) return T(0);
  const T r = num / den;
  return r > T(1) ? T(1) : r;
}

// Family A deferral bit r (the rule statistics read the unscaled max probabilities; tv only for opt).
template <typename T>
SPECCAS_HD bool family_a_defers(int rule, T alpha, T max_qh, T max_ph, T tv) {
  switch (rule) {
    case kChow: return max_qh < T(1) - alpha;
    case kDiff: return max_qh < max_ph - alpha;
    case kOpt: return max_qh < max_ph - mul_rn(alpha, tv);
    default: return true;  // speculative
  }
}

// Family B: v is in A iff prob_a(v) >= threshold, with prob_a = q^ (token_v1) or p^ (v2, v3).
template <typename T>
SPECCAS_HD T token_threshold(int rule, T alpha, T max_ph) {
  return rule == kTokenV3 ? mul_rn(T(1) - alpha, max_ph) : max_ph - alpha;
}

SPECCAS_HD bool token_set_reads_q(int rule) { return rule == kTokenV1; }

// How the residual race at a rejected position is built (reference.verify_args):
//   w = max(0, pi - q), argmax log(w) + G; pi itself when w is all zero.
enum ResidualKind : int {
  kResidP = 0,  // pi = p (speculative, lossy, family A with r = 1)
  kResidQ = 1,  // pi = q (family A with r = 0): w is all zero, race over log(q) + G directly
  kResidB = 2,  // pi = q 1[A] + eta p (family B)
};

}  // namespace speccas
