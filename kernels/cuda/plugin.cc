// The plugin's C entry points (cab/plugin.h): the server dlopens libcab_cuda_backend.so and calls
// cab_backend_create; nothing of CUDA is linked into the server itself.
#include "cab/plugin.h"

#include <cstring>
#include <exception>
#include <string>

#include "cuda_backend.h"

namespace {
void WriteError(const std::string& message, char* error, size_t error_len) {
  if (error == nullptr || error_len == 0) return;
  const size_t n = std::min(message.size(), error_len - 1);
  std::memcpy(error, message.data(), n);
  error[n] = '\0';
}
}  // namespace

extern "C" __attribute__((visibility("default"))) int cab_backend_abi_version() { return CAB_PLUGIN_ABI_VERSION; }

extern "C" __attribute__((visibility("default"))) void* cab_backend_create(const char* options, char* error,
                                                                           size_t error_len) {
  try {
    auto parsed = cab::cuda::ParseCudaBackendOptions(options ? options : "");
    if (!parsed.ok()) {
      WriteError(std::string(parsed.status().message()), error, error_len);
      return nullptr;
    }
    auto backend = cab::cuda::MakeCudaBackend(*parsed);
    if (!backend.ok()) {
      WriteError(std::string(backend.status().message()), error, error_len);
      return nullptr;
    }
    return backend->release();  // the caller owns it as a cab::Backend*
  } catch (const std::exception& e) {
    WriteError(e.what(), error, error_len);
    return nullptr;
  }
}
