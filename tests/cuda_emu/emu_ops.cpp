// The CUDA ops compiled as host C++ over the emulation in speccas_cuda_emu.h, in the namespace speccas_emu
// (-Dspeccas=speccas_emu, so they never clash with the real extension), registered for CPU tensors:
// torch.ops.speccas_emu.verify_native / verify_divergence_native / sample_native run the very kernels of
// csrc/verify_cuda.cu and csrc/sample_cuda.cu. Built by tests/test_cuda_emulated.py.
#include "ops.cpp"
#include "sample_cuda.cu"
#include "verify_cuda.cu"

TORCH_LIBRARY_IMPL(speccas, CPU, m) {
  m.impl("verify_native", &speccas::cuda::verify_native_cuda);
  m.impl("verify_divergence_native", &speccas::cuda::verify_divergence_native_cuda);
  m.impl("sample_native", &speccas::cuda::sample_native_cuda);
}
