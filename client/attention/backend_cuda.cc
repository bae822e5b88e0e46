// The CUDA attention backend: host tensors are uploaded, run through the kernels of
// cuda_attention.h and downloaded (cuda_host.cu). Plain C++: without CUDA built in, the internal
// entry points say so (cuda_none.cc) and the factory refuses with that reason.
#include "absl/strings/str_cat.h"
#include "attention_internal.h"
#include "cab/attention/backend.h"

namespace cab::attention {
namespace {

absl::Status KernelDType(DType dtype) {
  if (dtype == DType::kBF16 || dtype == DType::kF16) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("q.dtype: the CUDA kernels take fp16 or bf16, not ", DTypeName(dtype)));
}

class CudaAttentionBackend final : public AttentionBackend {
 public:
  std::string Name() const override { return "cuda"; }
  std::string Device() const override { return internal::CudaDeviceName(); }

  absl::Status SupportsPrefill(DType dtype, int head_dim, int block_size) const override {
    if (auto st = KernelDType(dtype); !st.ok()) return st;
    if (head_dim != 64 && head_dim != 128) {
      return absl::InvalidArgumentError(absl::StrCat("q.shape[3]: the CUDA kernels take head_dim 64 or 128, not ", head_dim));
    }
    if (block_size != 64 && block_size != 128) {
      return absl::InvalidArgumentError(absl::StrCat("block_size: the CUDA kernels take 64 or 128, not ", block_size));
    }
    return absl::OkStatus();
  }
  absl::Status SupportsDecode(DType dtype, int head_dim) const override {
    if (auto st = KernelDType(dtype); !st.ok()) return st;
    if (head_dim != 64 && head_dim != 128) {
      return absl::InvalidArgumentError(absl::StrCat("q.shape[3]: the CUDA kernels take head_dim 64 or 128, not ", head_dim));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<AttentionResult> Prefill(const TensorView& q, const TensorView& k, const TensorView& v,
                                          const BlockMask& mask, const PrefillOptions& options) override {
    auto s = internal::CheckPrefill(q, k, v, mask, options);
    if (!s.ok()) return s.status();
    if (auto st = SupportsPrefill(q.dtype, s->head_dim, s->block_size); !st.ok()) return st;
    return internal::PrefillCuda(q, k, v, mask, *s, options.causal);
  }
  absl::StatusOr<AttentionResult> Decode(const TensorView& q, const TensorView& k, const TensorView& v,
                                         const KeepIndices* keep, const DecodeOptions& options) override {
    auto s = internal::CheckDecode(q, k, v, keep, options);
    if (!s.ok()) return s.status();
    if (auto st = SupportsDecode(q.dtype, s->head_dim); !st.ok()) return st;
    return internal::DecodeCuda(q, k, v, keep, *s);
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<AttentionBackend>> MakeCudaAttentionBackend() {
  std::string why;
  if (!CudaAvailable(&why)) return absl::FailedPreconditionError(absl::StrCat("cuda attention backend: ", why));
  return std::unique_ptr<AttentionBackend>(std::make_unique<CudaAttentionBackend>());
}

}  // namespace cab::attention
