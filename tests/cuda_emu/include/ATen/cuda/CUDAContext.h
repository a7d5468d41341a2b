// CUDA emulation: a stream handle and device properties; SPECCAS_EMU_SMS sets the multiprocessor count
// (default 132, an H200's) so the chunk planning splits as it would there.
#pragma once
#include <cstdlib>
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
namespace at {
namespace cuda {
struct EmuStream {
  operator cudaStream_t() const { return nullptr; }
};
inline EmuStream getCurrentCUDAStream() { return EmuStream{}; }
struct EmuProps {
  int multiProcessorCount;
};
inline const EmuProps* getCurrentDeviceProperties() {
  static EmuProps p{std::getenv("SPECCAS_EMU_SMS") != nullptr ? std::atoi(std::getenv("SPECCAS_EMU_SMS")) : 132};
  return &p;
}
}  // namespace cuda
}  // namespace at
