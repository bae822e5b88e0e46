// The registry of attention backends: one table of (name, factory), and the per-call choice the
// host API (attention.h) makes. Shared instances are built once, on first use.
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cab/attention/backend.h"

namespace cab::attention {
namespace {

struct Registration {
  const char* name;
  absl::StatusOr<std::unique_ptr<AttentionBackend>> (*make)();
};

absl::StatusOr<std::unique_ptr<AttentionBackend>> MakeCpu() { return MakeCpuAttentionBackend(); }

// CPU first: it is the reference every other backend is tested against.
constexpr Registration kBackends[] = {
    {"cpu", &MakeCpu},
    {"cuda", &MakeCudaAttentionBackend},
};

// One instance per backend for the host API; nullptr (with the reason) where it is not available.
struct Shared {
  std::unique_ptr<AttentionBackend> cpu, cuda;
  absl::Status cuda_status;
};
const Shared& SharedBackends() {
  static const Shared* shared = [] {
    auto* s = new Shared;
    s->cpu = MakeCpuAttentionBackend();
    auto cuda = MakeCudaAttentionBackend();
    if (cuda.ok()) {
      s->cuda = std::move(*cuda);
    } else {
      s->cuda_status = cuda.status();
    }
    return s;
  }();
  return *shared;
}

}  // namespace

std::vector<std::string> RegisteredAttentionBackends() {
  std::vector<std::string> names;
  for (const auto& r : kBackends) names.push_back(r.name);
  return names;
}

std::vector<std::string> AvailableAttentionBackends() {
  std::vector<std::string> names;
  for (const auto& r : kBackends) {
    if (r.make().ok()) names.push_back(r.name);
  }
  return names;
}

absl::StatusOr<std::unique_ptr<AttentionBackend>> MakeAttentionBackend(const std::string& name) {
  for (const auto& r : kBackends) {
    if (name == r.name) return r.make();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("backend: unknown '", name, "' (", absl::StrJoin(RegisteredAttentionBackends(), ", "), ")"));
}

namespace {
// kAuto: CUDA when present and `supported` is OK; kCuda: CUDA or the reason why not.
absl::StatusOr<AttentionBackend*> Select(Device device, const std::function<absl::Status(const AttentionBackend&)>& supported) {
  const Shared& s = SharedBackends();
  if (device == Device::kCpu) return s.cpu.get();
  if (device == Device::kAuto) return s.cuda && supported(*s.cuda).ok() ? s.cuda.get() : s.cpu.get();
  if (!s.cuda) return absl::FailedPreconditionError(absl::StrCat("device: cuda requested but ", s.cuda_status.message()));
  if (auto st = supported(*s.cuda); !st.ok()) return st;
  return s.cuda.get();
}
}  // namespace

absl::StatusOr<AttentionBackend*> SelectPrefillBackend(Device device, DType dtype, int head_dim, int block_size) {
  return Select(device, [&](const AttentionBackend& b) { return b.SupportsPrefill(dtype, head_dim, block_size); });
}

absl::StatusOr<AttentionBackend*> SelectDecodeBackend(Device device, DType dtype, int head_dim) {
  return Select(device, [&](const AttentionBackend& b) { return b.SupportsDecode(dtype, head_dim); });
}

}  // namespace cab::attention
