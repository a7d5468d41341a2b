// CUDA emulation: the checks of a real CUDA build are no-ops here.
#pragma once
#define C10_CUDA_CHECK(expr) ((void)(expr))
#define C10_CUDA_KERNEL_LAUNCH_CHECK() ((void)0)
