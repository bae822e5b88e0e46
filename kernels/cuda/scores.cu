#include "scores.h"

#include <cmath>

#include "cuda_status.h"

namespace cab::cuda {
namespace {

// Both operands to bf16 in one launch, four floats per thread and step (16-byte loads, 8-byte
// stores) when the counts allow it (they are multiples of D).
__global__ void ToBf16Kernel(const float* q, __nv_bfloat16* q16, int64_t nq, const float* k, __nv_bfloat16* k16,
                             int64_t nk) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const bool vec = nq % 4 == 0 && nk % 4 == 0;
  if (vec) {
    for (int64_t t = first; t < (nq + nk) / 4; t += step) {
      const bool is_q = t < nq / 4;
      const int64_t v = is_q ? t : t - nq / 4;
      const float4 x = reinterpret_cast<const float4*>(is_q ? q : k)[v];
      __nv_bfloat162* out = reinterpret_cast<__nv_bfloat162*>(is_q ? q16 : k16) + 2 * v;
      out[0] = __floats2bfloat162_rn(x.x, x.y);
      out[1] = __floats2bfloat162_rn(x.z, x.w);
    }
    return;
  }
  for (int64_t t = first; t < nq + nk; t += step) {
    if (t < nq) {
      q16[t] = __float2bfloat16_rn(q[t]);
    } else {
      k16[t - nq] = __float2bfloat16_rn(k[t - nq]);
    }
  }
}

constexpr int kTile = 16;

// One 16 x 16 tile of S per CTA; the bound is summed over d in order, as the CPU does, then scaled.
__global__ void QuestKernel(ScoreArgs a, float scale) {
  extern __shared__ float tile[];
  const int D = a.dim, M = a.blocks, pitch = D + 1;
  float* qs = tile;
  float* lo = qs + kTile * pitch;
  float* hi = lo + kTile * pitch;
  const int bh = blockIdx.z;
  const int group = a.q_heads / a.kv_heads;
  const int b = bh / a.q_heads, h = bh % a.q_heads;
  const int64_t kvh = static_cast<int64_t>(b) * a.kv_heads + h / group;
  const int i0 = blockIdx.y * kTile, j0 = blockIdx.x * kTile;
  if (a.causal && j0 > i0 + kTile - 1) return;  // wholly outside the support
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int t = ty * kTile + tx; t < kTile * D; t += kTile * kTile) {
    const int r = t / D, d = t % D;
    const int i = i0 + r, j = j0 + r;
    qs[r * pitch + d] = i < M ? a.q[(static_cast<int64_t>(bh) * M + i) * D + d] : 0.f;
    lo[r * pitch + d] = j < M ? a.kmin[(kvh * M + j) * D + d] : 0.f;
    hi[r * pitch + d] = j < M ? a.kmax[(kvh * M + j) * D + d] : 0.f;
  }
  __syncthreads();
  const int i = i0 + ty, j = j0 + tx;
  if (i >= M || j >= M) return;
  float sum = 0.f;
  for (int d = 0; d < D; ++d) {
    const float x = qs[ty * pitch + d] * lo[tx * pitch + d], y = qs[ty * pitch + d] * hi[tx * pitch + d];
    sum += x > y ? x : y;
  }
  a.scores[(static_cast<int64_t>(bh) * M + i) * M + j] = sum * scale;
}

}  // namespace

absl::StatusOr<bool> CausalScorePlan::Launch(cublasHandle_t handle, const ScoreArgs& a, cudaStream_t stream) {
  const int M = a.blocks, D = a.dim, g = a.q_heads / a.kv_heads;
  if (a.quest || !a.causal || M < kMinBlocks || M % 4 != 0) return false;  // M % 4: 16-byte aligned bands
  const bool bf16 = a.mode == GemmMode::kBf16;
  const size_t elem = bf16 ? 2 : 4;
  const char* kbase = static_cast<const char*>(bf16 ? static_cast<const void*>(a.k16) : static_cast<const void*>(a.k));
  const char* qbase = static_cast<const char*>(bf16 ? static_cast<const void*>(a.q16) : static_cast<const void*>(a.q));
  const int heads = a.batch * a.q_heads;
  const std::vector<const void*> key = {kbase, qbase, a.scores, reinterpret_cast<const void*>(static_cast<intptr_t>(heads)),
                                        reinterpret_cast<const void*>(static_cast<intptr_t>(a.q_heads)),
                                        reinterpret_cast<const void*>(static_cast<intptr_t>(g)),
                                        reinterpret_cast<const void*>(static_cast<intptr_t>(M)),
                                        reinterpret_cast<const void*>(static_cast<intptr_t>(D)),
                                        reinterpret_cast<const void*>(static_cast<intptr_t>(elem))};
  const size_t per_band = 3 * static_cast<size_t>(heads);
  Plan* plan = nullptr;
  for (const auto& e : plans_) {
    if (e->key == key) plan = e.get();
  }
  if (plan == nullptr) {  // build (a synchronous copy: once per buffers and shape)
    if (plans_.size() >= kMaxPlans) {
      CAB_CUDA_RETURN(cudaStreamSynchronize(stream));  // earlier GEMMs on the stream may still read them
      plans_.clear();
    }
    std::vector<const void*> host(kCausalBands * per_band, nullptr);
    for (int p = 0; p < kCausalBands; ++p) {
      const int64_t r0 = static_cast<int64_t>(M) * p / kCausalBands;
      for (int bh = 0; bh < heads; ++bh) {
        const int64_t kvh = static_cast<int64_t>(bh / a.q_heads) * a.kv_heads + (bh % a.q_heads) / g;
        host[p * per_band + bh] = kbase + kvh * M * D * elem;
        host[p * per_band + heads + bh] = qbase + (static_cast<int64_t>(bh) * M + r0) * D * elem;
        host[p * per_band + 2 * heads + bh] = a.scores + (static_cast<int64_t>(bh) * M + r0) * M;
      }
    }
    auto made = std::make_unique<Plan>();
    CAB_RETURN_IF_ERROR(made->pointers.Reserve(host.size() * sizeof(void*)));
    CAB_CUDA_RETURN(cudaMemcpy(made->pointers.as<void>(), host.data(), host.size() * sizeof(void*), cudaMemcpyHostToDevice));
    made->key = key;
    plan = made.get();
    plans_.push_back(std::move(made));
  }
  const float scale = 1.f / std::sqrt(static_cast<float>(D)), beta = 0.f;
  const cudaDataType_t in_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t compute = a.mode == GemmMode::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const void** ptrs = plan->pointers.as<const void*>();
  for (int p = 0; p < kCausalBands; ++p) {
    const int r0 = static_cast<int>(static_cast<int64_t>(M) * p / kCausalBands);
    const int r1 = static_cast<int>(static_cast<int64_t>(M) * (p + 1) / kCausalBands);
    const void* const* A = ptrs + p * per_band;
    const void* const* B = A + heads;
    void* const* C = const_cast<void* const*>(A + 2 * heads);
    // Column-major C (r1 x (r1 - r0), ldc M) = K[0:r1]^T-as-(D x r1)^T * Q[r0:r1]-as-(D x (r1 - r0)).
    CAB_CUBLAS_RETURN(cublasGemmBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, r1, r1 - r0, D, &scale, A, in_type, D, B,
                                          in_type, D, &beta, C, CUDA_R_32F, M, heads, compute, CUBLAS_GEMM_DEFAULT));
  }
  return true;
}

absl::Status LaunchScores(cublasHandle_t handle, const ScoreArgs& a, cudaStream_t stream, CausalScorePlan* causal_plan) {
  const float scale = 1.f / std::sqrt(static_cast<float>(a.dim));
  const int M = a.blocks, D = a.dim, g = a.q_heads / a.kv_heads;
  if (a.quest) {
    dim3 grid((M + kTile - 1) / kTile, (M + kTile - 1) / kTile, a.batch * a.q_heads);
    const size_t smem = 3 * kTile * static_cast<size_t>(D + 1) * sizeof(float);
    if (smem > 48 * 1024) {
      CAB_CUDA_RETURN(cudaFuncSetAttribute(QuestKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    }
    QuestKernel<<<grid, dim3(kTile, kTile), smem, stream>>>(a, scale);
    CAB_CUDA_LAUNCHED("quest scores");
    return absl::OkStatus();
  }
  CAB_CUBLAS_RETURN(cublasSetStream(handle, stream));
  const float beta = 0.f;
  const int batches = a.batch * a.kv_heads;
  const long long stride_k = static_cast<long long>(M) * D, stride_q = stride_k * g;
  const long long stride_s = static_cast<long long>(g) * M * M;
  // Column-major view: C (M x gM) = K^T-as-(D x M)^T * Q-as-(D x gM), i.e. row-major S[gM][M].
  const void* A = a.k;
  const void* B = a.q;
  cudaDataType_t in_type = CUDA_R_32F;
  cublasComputeType_t compute = a.mode == GemmMode::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  if (a.mode == GemmMode::kBf16 && !a.bf16_ready) {
    const int64_t nq = static_cast<int64_t>(a.batch) * a.q_heads * M * D;
    const int64_t nk = static_cast<int64_t>(a.batch) * a.kv_heads * M * D;
    ToBf16Kernel<<<static_cast<unsigned>(std::min<int64_t>((nq + nk + 1023) / 1024, 4096)), 256, 0, stream>>>(
        a.q, a.q16, nq, a.k, a.k16, nk);
    CAB_CUDA_LAUNCHED("bf16 operands");
  }
  if (a.mode == GemmMode::kBf16) {
    A = a.k16;
    B = a.q16;
    in_type = CUDA_R_16BF;
  }
  if (causal_plan != nullptr) {
    auto banded = causal_plan->Launch(handle, a, stream);
    if (!banded.ok()) return banded.status();
    if (*banded) return absl::OkStatus();
  }
  CAB_CUBLAS_RETURN(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, M, g * M, D, &scale, A, in_type, D,
                                               stride_k, B, in_type, D, stride_q, &beta, a.scores, CUDA_R_32F, M,
                                               stride_s, batches, compute, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

}  // namespace cab::cuda
