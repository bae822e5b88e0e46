#include "backend_loader.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "cab/plugin.h"
#include "log.h"

namespace cab::server {
namespace {

constexpr const char* kPluginFile = "libcab_cuda_backend.so";

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

bool FileExists(const std::string& path) { return std::ifstream(path).good(); }

}  // namespace

std::string ExecutableDir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  return Dirname(std::string(buf, static_cast<size_t>(n)));
}

std::vector<std::string> PluginSearchPath(const BackendRequest& r) {
  if (!r.plugin_dir.empty()) return {r.plugin_dir};
  if (r.executable_dir.empty()) return {};
  return {r.executable_dir, r.executable_dir + "/../lib"};
}

absl::StatusOr<std::unique_ptr<cab::Backend>> LoadCudaPlugin(const BackendRequest& r) {
  std::string path;
  std::string searched;
  for (const std::string& dir : PluginSearchPath(r)) {
    const std::string candidate = dir + "/" + kPluginFile;
    absl::StrAppend(&searched, searched.empty() ? "" : ", ", candidate);
    if (FileExists(candidate)) {
      path = candidate;
      break;
    }
  }
  if (path.empty()) return absl::NotFoundError(absl::StrCat(kPluginFile, " not found (looked at ", searched, ")"));
  // The handle is never closed: the backend's code must outlive every object it created.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("cannot load ", path, ": ", dlerror()));
  }
  using AbiFn = int (*)();
  using CreateFn = void* (*)(const char*, char*, size_t);
  auto abi = reinterpret_cast<AbiFn>(dlsym(handle, "cab_backend_abi_version"));
  auto create = reinterpret_cast<CreateFn>(dlsym(handle, "cab_backend_create"));
  if (abi == nullptr || create == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(path, " does not export the cab plugin entry points"));
  }
  if (abi() != CAB_PLUGIN_ABI_VERSION) {
    return absl::FailedPreconditionError(absl::StrCat(path, " has plugin ABI version ", abi(), ", this server needs ",
                                                      CAB_PLUGIN_ABI_VERSION));
  }
  char error[512] = {0};
  void* backend = create(r.plugin_options.c_str(), error, sizeof(error));
  if (backend == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": ", error[0] ? error : "backend creation failed"));
  }
  return std::unique_ptr<cab::Backend>(static_cast<cab::Backend*>(backend));
}

absl::StatusOr<std::unique_ptr<cab::Backend>> MakeBackend(const BackendRequest& r) {
  cab::CpuBackendOptions cpu;
  cpu.threads = r.threads;
  if (r.kind == "cpu") return cab::MakeCpuBackend(cpu);
  auto cuda = LoadCudaPlugin(r);
  if (r.kind == "cuda") {
    if (!cuda.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("--backend=cuda: ", cuda.status().message()));
    }
    return cuda;
  }
  if (cuda.ok()) return cuda;
  Log("backend auto: using cpu (cuda unavailable: ", cuda.status().message(), ")");
  return cab::MakeCpuBackend(cpu);
}

}  // namespace cab::server
