// Backend selection: the embedded CPU backend, or the CUDA backend loaded from
// libcab_cuda_backend.so with dlopen (RTLD_LOCAL: its cuBLAS TLS stays out of the process image at
// start-up, see docs/server.md, and one binary serves CPU-only and GPU nodes).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/backend.h"

namespace cab::server {

struct BackendRequest {
  std::string kind = "auto";     // cpu | cuda | auto
  std::string plugin_dir;        // empty: the executable's directory, then ../lib relative to it
  std::string executable_dir;    // where cab-server lives (from /proc/self/exe)
  int threads = 0;               // CPU backend threads
  std::string plugin_options;    // "key=value;..." for cab_backend_create
};

// Directories searched for the plugin, in order.
std::vector<std::string> PluginSearchPath(const BackendRequest& r);

// Loads the plugin from the search path: NOT_FOUND when no file exists, FAILED_PRECONDITION when
// the ABI differs or the plugin refuses (for example "no CUDA device found").
absl::StatusOr<std::unique_ptr<cab::Backend>> LoadCudaPlugin(const BackendRequest& r);

// cpu: the CPU backend. cuda: the plugin or an error. auto: the plugin when it loads, else the CPU
// backend (the reason is logged).
absl::StatusOr<std::unique_ptr<cab::Backend>> MakeBackend(const BackendRequest& r);

// Directory of the running executable ("" if unknown).
std::string ExecutableDir();

}  // namespace cab::server
