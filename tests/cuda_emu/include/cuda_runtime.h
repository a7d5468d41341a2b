// CUDA emulation: everything lives in speccas_cuda_emu.h (force-included).
#pragma once
