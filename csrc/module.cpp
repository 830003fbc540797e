// The Python module fractal_ext._C: PyInit__C and the constants that describe the build. The
// operators live one folder each under csrc/: schema.cpp declares the schemas (a
// TORCH_LIBRARY_FRAGMENT of fractal_ext), cpu.cpp and cuda.cu register the kernels. Fake (meta)
// implementations are in fractal_ext/ops/fake.py, autograd formulas in fractal_ext/ops/autograd.py,
// plain-PyTorch references in fractal_ext/ops/reference.py.
#include <Python.h>
#include <torch/library.h>
#include <torch/version.h>

#include <algorithm>
#include <string>

#ifdef FRACTAL_EXT_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

// FRACTAL_EXT_CUDA_ARCHS comes from build_config.py as an underscore-joined token list (8.0_9.0).
#define FRACTAL_EXT_STRINGIFY_ARGS(...) #__VA_ARGS__
#define FRACTAL_EXT_STRINGIFY(...) FRACTAL_EXT_STRINGIFY_ARGS(__VA_ARGS__)

extern "C" {
// `import fractal_ext._C` loads this shared object, which runs the registrations of every operator
// folder (static initialisers).
// The module itself has no Python functions: everything is reached via torch.ops.fractal_ext.
// Its constants describe the build: WITH_CUDA (bool), CUDA_ARCHS (str, "" in a CPU-only build),
// CUDA_VERSION (int, CUDART_VERSION compiled against, 0 in a CPU-only build) and TORCH_VERSION
// (str, the torch headers compiled against).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
#ifdef FRACTAL_EXT_WITH_CUDA
  const bool with_cuda = true;
  const long cuda_version = CUDART_VERSION;
#ifdef FRACTAL_EXT_CUDA_ARCHS
  std::string arch_list = FRACTAL_EXT_STRINGIFY(FRACTAL_EXT_CUDA_ARCHS);
  std::replace(arch_list.begin(), arch_list.end(), '_', ',');
  const char* cuda_archs = arch_list.c_str();
#else
  const char* cuda_archs = "unknown";
#endif
#else
  const bool with_cuda = false;
  const long cuda_version = 0;
  const char* cuda_archs = "";
#endif
  if (PyModule_AddObjectRef(module, "WITH_CUDA", with_cuda ? Py_True : Py_False) < 0 ||
      PyModule_AddStringConstant(module, "CUDA_ARCHS", cuda_archs) < 0 ||
      PyModule_AddIntConstant(module, "CUDA_VERSION", cuda_version) < 0 ||
      PyModule_AddStringConstant(module, "TORCH_VERSION", TORCH_VERSION) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}

// The one TORCH_LIBRARY of the namespace. It declares nothing itself (each operator's schema.cpp
// adds its schemas as a fragment) but claims `fractal_ext`: torch allows one TORCH_LIBRARY per
// namespace, so another library that claims it fails to load, naming both places.
TORCH_LIBRARY(fractal_ext, m) {}
