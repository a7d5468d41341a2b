// Schemas of the native ops (TORCH_LIBRARY), and the stub that lets the shared library be imported
// as the Python module speccas_kernels._C (importing it runs the registrations below).
//
// The CPU implementations live in verify_cpu.cpp / sample_cpu.cpp, the CUDA
// ones in verify_cuda.cu / sample_cuda.cu (built only when torch has CUDA and a toolkit is found: SPECCAS_WITH_CUDA).
// The Triton backend registers its Python ops (verify_triton, sample_triton) in the same namespace
// as a fragment; the names here end in _native.
#include <Python.h>

#include <string>

#include "speccas.h"

// A fragment, so that the order in which this library and the Python fragment load never matters.
TORCH_LIBRARY_FRAGMENT(speccas, m) {
  // Per-row parameters come as (Tensor? t, scalar v): the [B] tensor when given, else one value for every row
  // (speccas_kernels/native.py: row()). Filters off: top_k 0, top_p 1, min_p 0. The layout is padded
  // (num_draft_tokens given or its value, cu_num_draft_tokens None) or ragged (cu_num_draft_tokens [B + 1]).
  static const std::string verify_args =
      "(Tensor? draft_logits, Tensor target_logits, Tensor draft_tokens, Tensor? num_draft_tokens, "
      "int num_draft_tokens_value, Tensor? cu_num_draft_tokens, int[] rule, float[] alpha_range, Tensor? alpha, "
      "float alpha_value, Tensor? temperature, float temperature_value, Tensor? top_k, int top_k_value, "
      "Tensor? top_p, float top_p_value, Tensor? min_p, float min_p_value, Tensor? seed, int seed_value, "
      "Tensor? offset, int offset_value, int vocab_size, int max_drafts) "
      "-> (Tensor tokens, Tensor num_accepted, Tensor deferred, Tensor accept_prob, Tensor valid";
  m.def(("verify_native" + verify_args + ")").c_str());
  // verify_native's round with the divergences of SPEC.md section 6 ([B, K] float32 each) computed from its
  // statistics, on CPU and CUDA (an extension built before the CUDA one existed has only the CPU kernel:
  // speccas_kernels/native.py then computes them after verify_native on CUDA tensors).
  m.def(("verify_divergence_native" + verify_args + ", Tensor divergence, Tensor draft_divergence)").c_str());
  m.def(
      "sample_native(Tensor logits, Tensor? temperature, float temperature_value, Tensor? top_k, int top_k_value, "
      "Tensor? top_p, float top_p_value, Tensor? min_p, float min_p_value, Tensor? seed, int seed_value, "
      "Tensor? offset, int offset_value, int vocab_size) -> Tensor");
}

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // speccas_kernels._C
      "speccas native ops: torch.ops.speccas.verify_native and torch.ops.speccas.sample_native",
      -1,
      nullptr,
  };
  return PyModule_Create(&module_def);
}
}
