// Built when CUDA is not: every GPU entry point says so, and the host API stays on the CPU.
#include "attention_internal.h"
#include "cab/attention/cuda_attention.h"

namespace cab::attention {
namespace internal {
bool CudaDeviceAvailable(std::string* why_not) {
  if (why_not) *why_not = "this build has no CUDA kernels";
  return false;
}
std::string CudaDeviceName() { return "none"; }
absl::StatusOr<AttentionResult> PrefillCuda(const TensorView&, const TensorView&, const TensorView&,
                                            const BlockMask&, const PrefillShape&, bool) {
  return absl::UnimplementedError("built without CUDA");
}
absl::StatusOr<AttentionResult> DecodeCuda(const TensorView&, const TensorView&, const TensorView&,
                                           const KeepIndices*, const DecodeShape&) {
  return absl::UnimplementedError("built without CUDA");
}
}  // namespace internal
namespace cuda {
absl::Status Prefill(const PrefillArgs&, void*) { return absl::UnimplementedError("built without CUDA"); }
size_t DecodeWorkspaceBytes(const DecodeArgs&) { return 0; }
absl::Status Decode(const DecodeArgs&, void*) { return absl::UnimplementedError("built without CUDA"); }
absl::Status CheckPrefillArgs(const PrefillArgs&) { return absl::UnimplementedError("built without CUDA"); }
absl::Status CheckDecodeArgs(const DecodeArgs&) { return absl::UnimplementedError("built without CUDA"); }
}  // namespace cuda
}  // namespace cab::attention
