// The attention backend interface: the two attention ops (block-sparse prefill over a BlockMask,
// decode over keep-indices) as one abstract class with a CPU implementation (the reference, always
// there) and a CUDA one (the kernels of cuda_attention.h, when built in and a GPU answers). Callers
// pick one at runtime by name from a small registry, like the predictor's backends (cab/backend.h,
// which this does not touch: the predictor's interface is the service's, this one the client's).
//
// Semantics are those of attention.h; every implementation validates its arguments itself
// (INVALID_ARGUMENT naming the field), so a backend can be called directly.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/attention/attention.h"

namespace cab::attention {

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  virtual std::string Name() const = 0;    // the registry name: "cpu", "cuda"
  virtual std::string Device() const = 0;  // "cpu" or the GPU's name

  // OK when this backend runs a problem of this kind; INVALID_ARGUMENT naming the field otherwise
  // (the CUDA kernels take fp16/bf16, head_dim 64/128, block 64/128).
  virtual absl::Status SupportsPrefill(DType dtype, int head_dim, int block_size) const = 0;
  virtual absl::Status SupportsDecode(DType dtype, int head_dim) const = 0;

  // options.device is ignored: the backend is the device.
  virtual absl::StatusOr<AttentionResult> Prefill(const TensorView& q, const TensorView& k, const TensorView& v,
                                                  const BlockMask& mask, const PrefillOptions& options) = 0;
  virtual absl::StatusOr<AttentionResult> Decode(const TensorView& q, const TensorView& k, const TensorView& v,
                                                 const KeepIndices* keep, const DecodeOptions& options) = 0;
};

// The CPU reference (fp32 arithmetic, double sums, threads over rows). Never fails to construct.
std::unique_ptr<AttentionBackend> MakeCpuAttentionBackend();
// The CUDA kernels; FAILED_PRECONDITION saying why where they were not built in or no GPU answers.
absl::StatusOr<std::unique_ptr<AttentionBackend>> MakeCudaAttentionBackend();

// Every registered backend name, CPU first, whether or not it can run here.
std::vector<std::string> RegisteredAttentionBackends();
// The registered backends that construct here (always contains "cpu").
std::vector<std::string> AvailableAttentionBackends();
// By name: "cpu", "cuda"; INVALID_ARGUMENT for an unknown name, the factory's error otherwise.
absl::StatusOr<std::unique_ptr<AttentionBackend>> MakeAttentionBackend(const std::string& name);

// The backend one call of the host API runs on (shared instances, thread-safe to call): kCpu is
// the CPU; kCuda is CUDA or an error (FAILED_PRECONDITION without a GPU, INVALID_ARGUMENT when the
// kernels do not take the problem); kAuto is CUDA when it is there and takes the problem, else CPU.
absl::StatusOr<AttentionBackend*> SelectPrefillBackend(Device device, DType dtype, int head_dim, int block_size);
absl::StatusOr<AttentionBackend*> SelectDecodeBackend(Device device, DType dtype, int head_dim);

}  // namespace cab::attention
