// The CPU attention backend: validation plus the reference kernels of prefill_cpu.cc/decode_cpu.cc.
#include "attention_internal.h"
#include "cab/attention/backend.h"

namespace cab::attention {
namespace {

class CpuAttentionBackend final : public AttentionBackend {
 public:
  std::string Name() const override { return "cpu"; }
  std::string Device() const override { return "cpu"; }
  // The reference takes every dtype, head size and block size the validation lets through.
  absl::Status SupportsPrefill(DType, int, int) const override { return absl::OkStatus(); }
  absl::Status SupportsDecode(DType, int) const override { return absl::OkStatus(); }

  absl::StatusOr<AttentionResult> Prefill(const TensorView& q, const TensorView& k, const TensorView& v,
                                          const BlockMask& mask, const PrefillOptions& options) override {
    auto s = internal::CheckPrefill(q, k, v, mask, options);
    if (!s.ok()) return s.status();
    return internal::PrefillCpu(q, k, v, mask, *s, options.causal);
  }
  absl::StatusOr<AttentionResult> Decode(const TensorView& q, const TensorView& k, const TensorView& v,
                                         const KeepIndices* keep, const DecodeOptions& options) override {
    auto s = internal::CheckDecode(q, k, v, keep, options);
    if (!s.ok()) return s.status();
    return internal::DecodeCpu(q, k, v, keep, *s);
  }
};

}  // namespace

std::unique_ptr<AttentionBackend> MakeCpuAttentionBackend() { return std::make_unique<CpuAttentionBackend>(); }

}  // namespace cab::attention
