// Counter-based randomness and the float math the races use, for host (C++) and device (CUDA).
//
// Bit for bit the scheme of speccas_kernels/random.py (SPEC.md section 5):
//
//   key     = (seed & 0xffffffff, (seed >> 32) & 0xffffffff)
//   counter = (v >> 2, stream, pos & 0xffffffff, (pos >> 32) & 0xffffffff)
//   bits    = philox4x32_10(counter, key)[v & 3]
//   u       = (2 * (bits >> 9) + 1) * 2**-24        in (0, 1), exact in float32
//   gumbel  = -log(-log(u))                          in float32
//
// sc_expf / sc_logf are branch-free Cephes-style float routines (about 1 ulp): the compiler
// vectorizes loops calling them (`#pragma omp simd`), and they give the same bits on the CPU and on
// the GPU whatever nvcc's --use_fast_math does to expf/logf (its __logf is far off near 1, exactly
// where -log(u) of a Gumbel draw lives).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SPECCAS_HD __host__ __device__ __forceinline__
#else
#define SPECCAS_HD inline __attribute__((always_inline))
#endif

namespace speccas {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

// The streams of rules.py (STREAM_*).
constexpr uint32_t kStreamDraft = 0;
constexpr uint32_t kStreamAccept = 1;
constexpr uint32_t kStreamEmit = 2;

struct Philox4 {
  uint32_t w[4];
};

SPECCAS_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  Philox4 out;
  out.w[0] = c0;
  out.w[1] = c1;
  out.w[2] = c2;
  out.w[3] = c3;
  return out;
}

// The four words for vocabulary entries 4*group .. 4*group + 3.
SPECCAS_HD Philox4 philox_group(int64_t seed, int64_t pos, uint32_t stream, int64_t group) {
  const uint64_t s = static_cast<uint64_t>(seed), p = static_cast<uint64_t>(pos);
  return philox4x32_10(static_cast<uint32_t>(group), stream, static_cast<uint32_t>(p), static_cast<uint32_t>(p >> 32),
                       static_cast<uint32_t>(s), static_cast<uint32_t>(s >> 32));
}

SPECCAS_HD uint32_t random_bits(int64_t seed, int64_t pos, uint32_t stream, int64_t v) {
  return philox_group(seed, pos, stream, v >> 2).w[v & 3];
}

SPECCAS_HD float bits_to_uniform(uint32_t bits) {
  return static_cast<float>((bits >> 9) * 2u + 1u) * 5.9604644775390625e-08f;  // 2**-24
}

SPECCAS_HD float int_as_float(int32_t i) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(i);
#else
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
#endif
}

SPECCAS_HD int32_t float_as_int(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(f);
#else
  int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
#endif
}

// exp(x) in float, about 1 ulp; exact 0 below ln(2**-150) (and for -inf), denormal results rounded.
SPECCAS_HD float sc_expf(float x) {
  x = x < -104.0f ? -104.0f : x;
  x = x > 88.7f ? 88.7f : x;
  const float t = x * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest integer (|t| < 2**22)
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const int32_t ni = static_cast<int32_t>(n);  // in [-150, 128]
  const int32_t n1 = ni >> 1, n2 = ni - n1;     // both in [-75, 64]: normal scale factors
  return p * int_as_float((n1 + 127) << 23) * int_as_float((n2 + 127) << 23);
}

// log(x) in float, about 1 ulp; log(0) = -inf, log(inf) = inf, NaN for x < 0 or NaN.
SPECCAS_HD float sc_logf(float x) {
  const bool den = x < 1.17549435e-38f;
  // Every operand is computed before it is selected: with -ftrapping-math (the default) GCC will
  // not if-convert a conditionally evaluated float op, and the loop would not vectorize.
  const float lifted = x * 8388608.0f;  // lift denormals by 2**23
  const float xs = den ? lifted : x;
  const int32_t bits = float_as_int(xs);
  int32_t e = ((bits >> 23) & 0xff) - 126;
  e = den ? e - 23 : e;
  const float m = int_as_float((bits & 0x007fffff) | 0x3f000000);  // [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1 : e;
  const float f_small = (m + m) - 1.0f, f_big = m - 1.0f;
  const float f = small ? f_small : f_big;
  const float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  const float fe = static_cast<float>(e);
  y = y + fe * -2.12194440e-4f;
  y = y - 0.5f * z;
  float r = f + y;
  r = r + fe * 0.693359375f;
  // Special values by integer selects (a float select on `x == 0` stops GCC's vectorizer).
  const int32_t is_zero = -static_cast<int32_t>(x == 0.0f);
  const int32_t is_inf = -static_cast<int32_t>(x == __builtin_huge_valf());
  const int32_t is_nan = -static_cast<int32_t>((x < 0.0f) | (x != x));
  int32_t rb = float_as_int(r);
  rb = (rb & ~is_zero) | (static_cast<int32_t>(0xff800000u) & is_zero);  // -inf
  rb = (rb & ~is_inf) | (0x7f800000 & is_inf);                              // +inf
  rb = (rb & ~is_nan) | (0x7fc00000 & is_nan);                              // NaN
  return int_as_float(rb);
}

// Standard Gumbel noise for one word: -log(-log(u)).
SPECCAS_HD float bits_to_gumbel(uint32_t bits) {
  return -sc_logf(-sc_logf(bits_to_uniform(bits)));
}

SPECCAS_HD float gumbel(int64_t seed, int64_t pos, uint32_t stream, int64_t v) {
  return bits_to_gumbel(random_bits(seed, pos, stream, v));
}

SPECCAS_HD float uniform(int64_t seed, int64_t pos, uint32_t stream, int64_t v) {
  return bits_to_uniform(random_bits(seed, pos, stream, v));
}

}  // namespace speccas
