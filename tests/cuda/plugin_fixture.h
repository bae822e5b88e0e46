// Shared by the CUDA cross-backend tests: the plugin loaded once with dlopen (as cab-server does),
// REQUIRE_GPU() (skips with the reason where no GPU or plugin exists) and random input tensors.
#pragma once

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cab/backend.h"
#include "gtest/gtest.h"

namespace cab {

// Loads the plugin once; null (with the reason) when no GPU or no plugin.
struct Plugin {
  std::unique_ptr<Backend> backend;
  std::string why;
};

// A backend from the plugin with `options` (cab_backend_create's string); null with the reason.
inline Plugin LoadPlugin(const char* options) {
  Plugin p;
  // CAB_CUDA_PLUGIN overrides the build-tree path (scripts/gpu-run.sh runs a bundled copy).
  const char* path = std::getenv("CAB_CUDA_PLUGIN") ? std::getenv("CAB_CUDA_PLUGIN") : CAB_CUDA_PLUGIN_PATH;
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    p.why = std::string("cannot load the CUDA plugin: ") + dlerror();
    return p;
  }
  using Create = void* (*)(const char*, char*, size_t);
  auto create = reinterpret_cast<Create>(dlsym(lib, "cab_backend_create"));
  if (create == nullptr) {
    p.why = "plugin has no cab_backend_create";
    return p;
  }
  char error[512] = {0};
  void* b = create(options, error, sizeof(error));
  if (b == nullptr) {
    p.why = std::string("no usable GPU: ") + error;
    return p;
  }
  p.backend.reset(static_cast<Backend*>(b));
  return p;
}

// The shared unbatched backend, loaded once.
inline Plugin& GetPlugin() {
  static Plugin* plugin = new Plugin(LoadPlugin("gemm=auto"));
  return *plugin;
}

#define REQUIRE_GPU()                                                    \
  Backend* gpu = GetPlugin().backend.get();                              \
  if (gpu == nullptr) {                                                  \
    GTEST_SKIP() << "skipped: " << GetPlugin().why;                      \
  }

struct Input {
  std::vector<int64_t> shape;
  DType dtype;
  std::vector<uint8_t> bytes;
  TensorView view() const { return TensorView{bytes.data(), dtype, shape}; }
};

// Continuous normal values (grid = false) or values k/64 with |k| <= 127 (exact in every dtype, so
// scores tie exactly). A few tokens get a larger scale so max-L2 picks are not near-ties.
inline Input MakeInput(std::vector<int64_t> shape, DType dtype, uint64_t seed, bool grid) {
  Input in{shape, dtype, {}};
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  in.bytes.resize(n * DTypeSize(dtype));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_int_distribution<int> k(-127, 127);
  for (int64_t i = 0; i < n; ++i) {
    float v = grid ? k(rng) / 64.f : normal(rng);
    if (dtype == DType::kF32) {
      std::memcpy(in.bytes.data() + 4 * i, &v, 4);
    } else {
      const uint16_t h = dtype == DType::kF16 ? FloatToHalf(v) : FloatToBF16(v);
      std::memcpy(in.bytes.data() + 2 * i, &h, 2);
    }
  }
  return in;
}

}  // namespace cab
