// Scalar math shared by the CPU (cpu_common.h) and CUDA (verify_cuda.cu) implementations, written
// once as __host__ __device__ templates: each side keeps its own types and calls these.
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define SPECCAS_HOST_DEVICE __host__ __device__
#else
#define SPECCAS_HOST_DEVICE
#endif

namespace speccas {

// Merge the statistics of a position's vocabulary chunks (fields max, s1, sT, amax, bad) into
// `out` (fields M, S1, ST, amax, bad): the overall max, the sums rescaled to it (in double), the
// first chunk's argmax among those reaching the max. bad: a chunk saw NaN / +inf, or all -inf;
// then only `out.bad` is written. The chunks' s1 are sums of exp(z - max); with `scaled` their sT
// are sums of exp((z - max) * inv_t), inv_t = 1/T as reference.inv_temperature rounds it, and are
// merged the same way; otherwise ST = S1.
template <typename acc_t, typename Chunk, typename Pos, typename Index>
SPECCAS_HOST_DEVICE inline void merge_chunk_stats(const Chunk* c, Index nch, acc_t inv_t, bool scaled, Pos& out) {
  const acc_t ninf = -static_cast<acc_t>(INFINITY);
  acc_t M = ninf;
  int bad = 0;
  for (Index k = 0; k < nch; ++k) {
    M = c[k].max > M ? c[k].max : M;
    bad |= c[k].bad;
  }
  out.bad = bad || M == ninf;
  if (out.bad) return;
  out.M = M;
  double s1 = 0.0, sT = 0.0;
  bool have_amax = false;
  for (Index k = 0; k < nch; ++k) {
    if (c[k].max == ninf) continue;
    const double d = static_cast<double>(c[k].max) - static_cast<double>(M);
    s1 += c[k].s1 * (d == 0.0 ? 1.0 : ::exp(d));
    if (scaled) sT += c[k].sT * (d == 0.0 ? 1.0 : ::exp(d * static_cast<double>(inv_t)));
    if (!have_amax && c[k].max == M) {
      out.amax = c[k].amax;
      have_amax = true;
    }
  }
  out.S1 = static_cast<acc_t>(s1);
  out.ST = scaled ? static_cast<acc_t>(sT) : out.S1;
}

}  // namespace speccas
