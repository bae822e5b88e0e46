#include "operand_upload.h"

#include <cstring>
#include <type_traits>

#include "coarsen_math.h"  // kernels/cpu: Bf16Bits
#include "cuda_status.h"

namespace cab::cuda {
namespace {

// True when every value is exactly a bf16 value (its low 16 bits are zero): then a bf16 GEMM with
// fp32 accumulation computes the same products as fp32.
// Two floats per 64-bit word, 8 words per step, and a stop at the first step that finds a low bit
// (fp32 data usually fails at once); a float at a time took 17 ms for the 2 x 32 MiB of a 128k
// request (H100 host, notes/gpu-runs.md run 32).
bool AllBf16(const float* v, size_t n) {
  constexpr uint64_t kLow = 0x0000ffff0000ffffull;
  const size_t words = n / 2;
  const unsigned char* bytes = reinterpret_cast<const unsigned char*>(v);
  size_t i = 0;
  for (; i + 8 <= words; i += 8) {
    uint64_t w[8];
    std::memcpy(w, bytes + 8 * i, sizeof(w));
    if (((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) & kLow) != 0) return false;
  }
  uint64_t acc = 0;
  for (; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, bytes + 8 * i, 8);
    acc |= w & kLow;
  }
  if (n % 2 != 0) {
    uint32_t u;
    std::memcpy(&u, v + n - 1, 4);
    acc |= u & 0xffffu;
  }
  return acc == 0;
}

absl::StatusOr<PredictorInputs> StageAndCopy(InputSlot& slot, cudaStream_t stream, const std::vector<UploadPart>& parts,
                                             bool bf16_exact, bool bf16_scores) {
  const HostOperands& o0 = *parts.front().ops;
  const int g = o0.q_heads / o0.kv_heads;
  const size_t row = static_cast<size_t>(o0.blocks) * o0.dim;  // values per head
  int nb = 0;
  for (const UploadPart& part : parts) nb += part.nb;
  const int nh = parts.front().nh, nkv = (nh + g - 1) / g;
  const size_t nq = static_cast<size_t>(nb) * nh * row, nk = static_cast<size_t>(nb) * nkv * row;
  const bool quest = o0.kmin != nullptr;
  // Operands that are bf16 values travel as bf16 when the score GEMM takes them so: half the
  // staging and upload, and no cast pass on the device.
  const bool as_bf16 = !quest && bf16_exact && bf16_scores;
  const size_t total = nq + (quest ? 2 : 1) * nk;
  CAB_RETURN_IF_ERROR(slot.staging.Reserve(total * sizeof(float)));
  float* stage = slot.staging.as<float>();
  // Stacks the parts' batches: part after part, each its heads [first, first + count) per batch.
  // A source is fp32 or bf16 bits, the destination floats or bf16 (the top half of each float:
  // exact for bf16 values).
  enum Which { kQuery, kKey, kMin, kMax };
  auto gather = [&](Which which, auto* dst) {
    using Dst = std::remove_pointer_t<decltype(dst)>;
    for (const UploadPart& part : parts) {
      const HostOperands& o = *part.ops;
      const bool query = which == kQuery;
      const int heads = query ? o.q_heads : o.kv_heads;
      const int first = query ? part.h0 : part.h0 / g, count = query ? nh : nkv;
      const float* f32 = which == kQuery ? o.q : which == kKey ? o.k : which == kMin ? o.kmin : o.kmax;
      const uint16_t* b16 = which == kQuery ? o.q_bf16 : which == kKey ? o.k_bf16 : nullptr;
      for (int b = 0; b < part.nb; ++b) {
        const size_t from = (static_cast<size_t>(part.b0 + b) * heads + first) * row;
        const size_t n = static_cast<size_t>(count) * row;
        if constexpr (std::is_same_v<Dst, float>) {
          if (f32 != nullptr) {
            std::memcpy(dst, f32 + from, n * sizeof(float));
          } else {
            for (size_t i = 0; i < n; ++i) {
              uint16_t h;
              std::memcpy(&h, b16 + from + i, 2);
              dst[i] = coarsen_internal::Bf16Bits(h);
            }
          }
        } else if (b16 != nullptr) {
          std::memcpy(dst, b16 + from, n * sizeof(uint16_t));
        } else {
          for (size_t i = 0; i < n; ++i) {
            uint32_t u;
            std::memcpy(&u, f32 + from + i, 4);
            dst[i] = static_cast<uint16_t>(u >> 16);
          }
        }
        dst += n;
      }
    }
  };
  PredictorInputs in;
  in.batch = nb;
  in.q_heads = nh;
  in.kv_heads = nkv;
  in.blocks = o0.blocks;
  in.dim = o0.dim;
  if (as_bf16) {
    uint16_t* stage16 = slot.staging.as<uint16_t>();
    gather(kQuery, stage16);
    gather(kKey, stage16 + nq);
    CAB_RETURN_IF_ERROR(slot.q.Reserve(nq * 2));
    CAB_RETURN_IF_ERROR(slot.k.Reserve(nk * 2));
    CAB_CUDA_RETURN(cudaMemcpyAsync(slot.q.as<void>(), stage16, nq * 2, cudaMemcpyHostToDevice, stream));
    CAB_CUDA_RETURN(cudaMemcpyAsync(slot.k.as<void>(), stage16 + nq, nk * 2, cudaMemcpyHostToDevice, stream));
    in.bf16_exact = true;
    in.q_rep_bf16 = slot.q.as<__nv_bfloat16>();
    in.k_feature_bf16 = slot.k.as<__nv_bfloat16>();
    return in;
  }
  gather(kQuery, stage);
  CAB_RETURN_IF_ERROR(slot.q.Reserve(nq * sizeof(float)));
  CAB_CUDA_RETURN(cudaMemcpyAsync(slot.q.as<float>(), stage, nq * sizeof(float), cudaMemcpyHostToDevice, stream));
  in.q_rep = slot.q.as<float>();
  if (quest) {
    gather(kMin, stage + nq);
    gather(kMax, stage + nq + nk);
    CAB_RETURN_IF_ERROR(slot.kmin.Reserve(nk * sizeof(float)));
    CAB_RETURN_IF_ERROR(slot.kmax.Reserve(nk * sizeof(float)));
    CAB_CUDA_RETURN(cudaMemcpyAsync(slot.kmin.as<float>(), stage + nq, nk * sizeof(float), cudaMemcpyHostToDevice, stream));
    CAB_CUDA_RETURN(cudaMemcpyAsync(slot.kmax.as<float>(), stage + nq + nk, nk * sizeof(float), cudaMemcpyHostToDevice,
                                    stream));
    in.kmin = slot.kmin.as<float>();
    in.kmax = slot.kmax.as<float>();
  } else {
    gather(kKey, stage + nq);
    CAB_RETURN_IF_ERROR(slot.k.Reserve(nk * sizeof(float)));
    CAB_CUDA_RETURN(cudaMemcpyAsync(slot.k.as<float>(), stage + nq, nk * sizeof(float), cudaMemcpyHostToDevice, stream));
    in.k_feature = slot.k.as<float>();
    in.bf16_exact = bf16_exact;
  }
  return in;
}

}  // namespace

// True when the operands the scores GEMM reads are all exactly bf16 values (see AllBf16); bf16
// bits are by definition. Quest's bound kernel reads fp32.
bool OperandsBf16(const HostOperands& o) {
  if (o.kmin != nullptr) return false;
  return (o.q_bf16 != nullptr || AllBf16(o.q, o.q_elems())) && (o.k_bf16 != nullptr || AllBf16(o.k, o.k_elems()));
}

absl::StatusOr<PredictorInputs> UploadOperands(InputSlot& slot, cudaStream_t copy_stream,
                                               const std::vector<UploadPart>& parts, bool bf16_exact, bool bf16_scores) {
  // The slot's last kernels and last copies must be done before its buffers are overwritten.
  CAB_CUDA_RETURN(cudaEventSynchronize(slot.consumed));
  CAB_CUDA_RETURN(cudaEventSynchronize(slot.uploaded));
  auto in = StageAndCopy(slot, copy_stream, parts, bf16_exact, bf16_scores);
  if (!in.ok()) {
    cudaStreamSynchronize(copy_stream);  // no copy of a failed upload may still read the staging
    return in.status();
  }
  CAB_CUDA_RETURN(cudaEventRecord(slot.uploaded, copy_stream));
  return in;
}

}  // namespace cab::cuda
