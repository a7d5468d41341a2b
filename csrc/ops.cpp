// Schemas of the native ops (TORCH_LIBRARY), and the stub that lets the shared library be imported
// as the Python module speccas_kernels._C (importing it runs the registrations below).
//
// The CPU implementations live in verify_cpu.cpp / sample_cpu.cpp, the CUDA ones in verify_cuda.cu /
// sample_cuda.cu (built only when torch has CUDA and a toolkit is found: SPECCAS_WITH_CUDA).
// The Triton backend registers its Python ops (verify_triton, sample_triton) in the same namespace
// as a fragment; the names here end in _native.
#include <Python.h>

#include "speccas.h"

// A fragment, so that the order in which this library and the Python fragment load never matters.
TORCH_LIBRARY_FRAGMENT(speccas, m) {
  m.def(
      "verify_native(Tensor draft_logits, Tensor target_logits, Tensor draft_tokens, int[] rule, float[] alpha_range, "
      "Tensor alpha, "
      "Tensor temperature, Tensor seed, Tensor offset, Tensor num_draft_tokens, int vocab_size) "
      "-> (Tensor tokens, Tensor num_accepted, Tensor deferred, Tensor accept_prob, Tensor valid)");
  m.def("sample_native(Tensor logits, Tensor temperature, Tensor seed, Tensor offset, int vocab_size) -> Tensor");
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
