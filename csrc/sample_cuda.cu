// sample_native on CUDA: argmax_v z(v) + T G(v), G = gumbel(seed, offset, STREAM_DRAFT, v) (plain argmax
// at T = 0), -1 for rows with NaN/+inf/all -inf logits or a bad T. Two launches: a race per
// (row, vocabulary chunk), then one thread per row merges the chunks. No host synchronization.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_common.cuh"
#include "speccas.h"

namespace speccas {
namespace cuda {
namespace {

template <typename acc_t>
struct SampleChunk {
  acc_t best;
  int64_t idx;
  int bad;
};

template <typename in_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) _sample_race_kernel(
    SampleChunk<acc_t>* __restrict__ out,   // [B, nch]
    const in_t* __restrict__ z,             // [B, V]
    const acc_t* __restrict__ temperature,  // [B]
    const int64_t* __restrict__ seed, const int64_t* __restrict__ offset, int64_t sB, int64_t V, int64_t csz,
    int nch) {
  __shared__ acc_t sh_v[kWarps];
  __shared__ int64_t sh_i[kWarps];
  __shared__ double sh_d[kWarps];
  const int64_t b = blockIdx.x;
  const int c = blockIdx.y;
  const acc_t T = temperature[b];
  const int64_t sd = seed[b], pos = offset[b];
  const in_t* row = z + b * sB;
  const int64_t lo = static_cast<int64_t>(c) * csz;  // a multiple of 4
  const int64_t hi = lo + csz < V ? lo + csz : V;
  const bool noisy = T != acc_t(0);
  acc_t best = neg_inf<acc_t>();
  int64_t idx = -1;
  int bad = 0;
  for (int64_t g0 = lo + 4 * static_cast<int64_t>(threadIdx.x); g0 < hi; g0 += 4 * kThreads) {
    Philox4 r{};
    if (noisy) r = philox_group(sd, pos, kStreamDraft, g0 >> 2);
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const int64_t v = g0 + l;
      if (v >= hi) break;
      const acc_t x = load_as<in_t, acc_t>(row + v);
      bad |= (x != x) | (x == static_cast<acc_t>(INFINITY));
      const acc_t s = noisy ? x + T * static_cast<acc_t>(bits_to_gumbel(r.w[l])) : x;
      if (idx < 0 || s > best) {
        best = s;
        idx = v;
      }
    }
  }
  block_argmax(best, idx, sh_v, sh_i);
  bad = block_sum(static_cast<double>(bad), sh_d) > 0.0;
  if (threadIdx.x == 0) out[b * nch + c] = SampleChunk<acc_t>{best, idx, bad};
}

template <typename acc_t>
__global__ void _sample_emit_kernel(int64_t* __restrict__ tokens, const SampleChunk<acc_t>* __restrict__ chunks,
                                    const acc_t* __restrict__ temperature, int64_t B, int64_t V, int nch) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= B) return;
  const acc_t T = temperature[b];
  acc_t best = neg_inf<acc_t>();
  int64_t idx = -1;
  int bad = 0;
  for (int c = 0; c < nch; ++c) {
    const SampleChunk<acc_t> r = chunks[b * nch + c];
    bad |= r.bad;
    if (r.idx >= 0 && (idx < 0 || r.best > best)) {
      best = r.best;
      idx = r.idx;
    }
  }
  const bool ok = (T - T) == acc_t(0) && T >= acc_t(0) && !bad && best != neg_inf<acc_t>() && idx >= 0;
  tokens[b] = ok ? (idx < V ? idx : V - 1) : -1;
}

at::Tensor sample_native_cuda(const at::Tensor& logits_in, const at::Tensor& temperature, const at::Tensor& seed,
                              const at::Tensor& offset, int64_t vocab_size) {
  check_sample_inputs(logits_in, temperature, seed, offset, vocab_size);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.stride(-1) == 1 ? logits_in : logits_in.contiguous();
  const int64_t B = logits.size(0), V = vocab_size;
  at::Tensor out = at::full({B}, -1, logits.options().dtype(at::kLong));
  if (B == 0) return out;
  const at::Tensor T = temperature.contiguous(), s = seed.contiguous(), o = offset.contiguous();
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  int nch = static_cast<int>(plan_chunks_cuda(B, V, sms));
  const int64_t csz = ceil_div_h(ceil_div_h(V, nch), 64) * 64;
  nch = static_cast<int>(ceil_div_h(V, csz));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "sample_native_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    at::Tensor ws = at::empty({B * nch * static_cast<int64_t>(sizeof(SampleChunk<acc_t>))},
                              logits.options().dtype(at::kByte));
    auto* chunks = reinterpret_cast<SampleChunk<acc_t>*>(ws.data_ptr());
    _sample_race_kernel<scalar_t, acc_t><<<dim3(static_cast<unsigned>(B), nch), kThreads, 0, stream>>>(
        chunks, logits.data_ptr<scalar_t>(), T.data_ptr<acc_t>(), s.data_ptr<int64_t>(), o.data_ptr<int64_t>(),
        logits.stride(0), V, csz, nch);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    _sample_emit_kernel<acc_t><<<static_cast<unsigned>(ceil_div_h(B, 128)), 128, 0, stream>>>(
        out.data_ptr<int64_t>(), chunks, T.data_ptr<acc_t>(), B, V, nch);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace speccas

TORCH_LIBRARY_IMPL(speccas, CUDA, m) { m.impl("sample_native", &speccas::cuda::sample_native_cuda); }
