// CUDA emulation: there is one (host) device.
#pragma once
#include <c10/core/Device.h>
namespace c10 {
namespace cuda {
struct CUDAGuard {
  explicit CUDAGuard(const c10::Device&) {}
};
}  // namespace cuda
}  // namespace c10
