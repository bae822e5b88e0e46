// A stand-in for libcab_cuda_backend.so: exports the plugin entry points, reports the ABI version
// it was compiled with (FAKE_ABI) and refuses to create a backend, like a GPU-less host.
#include <cstdio>

#include "cab/plugin.h"

extern "C" {
int cab_backend_abi_version() { return FAKE_ABI; }
void* cab_backend_create(const char*, char* error, size_t error_len) {
  std::snprintf(error, error_len, "no CUDA device found");
  return nullptr;
}
}
