#include "device_evictor.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "coarsen_kernel.h"
#include "cuda_status.h"
#include "evict_kernels.h"

namespace cab::cuda {
namespace {

// round(ratio * keep) half away from zero, clamped to [0, keep]: the CPU's Share.
int64_t Share(float ratio, int64_t keep) {
  return std::clamp<int64_t>(std::llround(static_cast<double>(ratio) * keep), 0, keep);
}

// Copies a host tensor to `raw` and widens it to float in `f`.
absl::Status Upload(const TensorView& t, DeviceBuffer& raw, DeviceBuffer& f, cudaStream_t stream) {
  CAB_RETURN_IF_ERROR(raw.Reserve(std::max<size_t>(t.nbytes(), 1)));
  CAB_RETURN_IF_ERROR(f.Reserve(std::max<size_t>(t.numel() * sizeof(float), 1)));
  CAB_CUDA_RETURN(cudaMemcpyAsync(raw.as<void>(), t.data, t.nbytes(), cudaMemcpyHostToDevice, stream));
  return LaunchToFloat(raw.as<void>(), t.dtype, t.numel(), f.as<float>(), stream);
}

// snapkv's pooled votes into value [H, n] (prefix columns of each row): per kv head, the group's
// window queries against the prefix keys in query chunks that bound the logits buffer.
absl::Status SnapKVVotes(DevicePredictor& pred, EvictWorkspace& ws, const cpu::EvictShape& s, const EvictParams& p,
                         int heads, int64_t n, int64_t prefix) {
  const cudaStream_t stream = pred.stream();
  const int64_t rows = static_cast<int64_t>(s.group) * s.window_len;
  const int64_t chunk = std::clamp<int64_t>((int64_t{64} << 20) / prefix, 1, rows);  // <= 256 MiB of logits
  CAB_RETURN_IF_ERROR(ws.logits.Reserve(static_cast<size_t>(chunk * prefix) * sizeof(float)));
  CAB_RETURN_IF_ERROR(ws.row_max.Reserve(chunk * sizeof(float)));
  CAB_RETURN_IF_ERROR(ws.row_sum.Reserve(chunk * sizeof(double)));
  CAB_RETURN_IF_ERROR(ws.votes.Reserve(static_cast<size_t>(heads) * prefix * sizeof(double)));
  CAB_CUDA_RETURN(cudaMemsetAsync(ws.votes.as<void>(), 0, static_cast<size_t>(heads) * prefix * sizeof(double), stream));
  const float alpha = 1.0f / std::sqrt(static_cast<float>(s.dim)), beta = 0.f;
  for (int h = 0; h < heads; ++h) {
    const float* keys = ws.keys_f.as<float>() + static_cast<int64_t>(h) * n * s.dim;
    const float* window = ws.window_f.as<float>() + static_cast<int64_t>(h) * rows * s.dim;
    double* votes = ws.votes.as<double>() + static_cast<int64_t>(h) * prefix;
    for (int64_t q0 = 0; q0 < rows; q0 += chunk) {
      const int64_t qc = std::min(chunk, rows - q0);
      // Row-major logits [qc, prefix] = window [qc, D] . keys [prefix, D]^T, as column-major
      // [prefix, qc] = keys^T(op T of the D x prefix view) . window (D x qc view). fp32, no TF32.
      CAB_CUBLAS_RETURN(cublasSgemm(pred.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(prefix),
                                    static_cast<int>(qc), s.dim, &alpha, keys, s.dim, window + q0 * s.dim, s.dim,
                                    &beta, ws.logits.as<float>(), static_cast<int>(prefix)));
      CAB_RETURN_IF_ERROR(LaunchRowSoftmaxStats(ws.logits.as<float>(), qc, prefix, ws.row_max.as<float>(),
                                                ws.row_sum.as<double>(), stream));
      CAB_RETURN_IF_ERROR(LaunchAccumulateVotes(ws.logits.as<float>(), qc, prefix, ws.row_max.as<float>(),
                                                ws.row_sum.as<double>(), votes, stream));
    }
  }
  return LaunchMaxPool(ws.votes.as<double>(), heads, prefix, p.snapkv_pool / 2, n, ws.value.as<float>(), stream);
}

// cab's bridge ranking: key blocks coarsened (max-L2) and their graph built on the device, then
// block_rank[h, m] = position of block m by (min edge curvature, m), -1 without an edge.
absl::Status RankBridgeBlocks(DevicePredictor& pred, EvictWorkspace& ws, const TensorView& keys,
                              const cpu::EvictShape& s, const EvictParams& p, int heads) {
  const cudaStream_t stream = pred.stream();
  CoarsenArgs a;
  a.x = ws.raw_keys.as<void>();
  a.dtype = keys.dtype;
  a.batch = s.batch;
  a.heads = s.kv_heads;
  a.tokens = s.tokens;
  a.dim = s.dim;
  a.block_size = p.block_size;
  const int M = a.blocks();
  const bool bf16 = keys.dtype == DType::kBF16;  // max-L2 representatives are input tokens: exact in bf16
  const bool bf16_only = bf16 && pred.Bf16Scores(true);
  if (bf16) {  // the score GEMM's operands come out of the same pass (then no fp32 copy is read)
    CAB_RETURN_IF_ERROR(ws.maxl2_bf16.Reserve(static_cast<size_t>(heads) * M * s.dim * sizeof(__nv_bfloat16)));
    a.maxl2_bf16 = ws.maxl2_bf16.as<__nv_bfloat16>();
  }
  if (!bf16_only) {
    CAB_RETURN_IF_ERROR(ws.maxl2.Reserve(static_cast<size_t>(heads) * M * s.dim * sizeof(float)));
    a.maxl2 = ws.maxl2.as<float>();
  }
  CAB_RETURN_IF_ERROR(LaunchCoarsen(a, stream));

  PredictorInputs in;
  in.batch = s.batch;
  in.q_heads = s.kv_heads;
  in.kv_heads = s.kv_heads;
  in.blocks = M;
  in.dim = s.dim;
  in.q_rep = bf16_only ? nullptr : ws.maxl2.as<float>();
  in.k_feature = in.q_rep;
  in.bf16_exact = bf16;
  if (bf16) in.q_rep_bf16 = in.k_feature_bf16 = ws.maxl2_bf16.as<__nv_bfloat16>();
  MaskParams mp;
  mp.policy = MaskPolicy::kCab;
  mp.graph = p.graph;
  mp.graph.estimator = Estimator::kMaxL2;  // the key graph is always on max-L2 keys (BuildKeyGraphCpu)
  CAB_RETURN_IF_ERROR(pred.Enqueue(in, mp, 0, M, /*graph_only=*/true));

  const size_t hm = static_cast<size_t>(heads) * M;
  CAB_RETURN_IF_ERROR(ws.block_min.Reserve(hm * sizeof(float)));
  CAB_RETURN_IF_ERROR(ws.has_edge.Reserve(hm * sizeof(int32_t)));
  CAB_RETURN_IF_ERROR(ws.block_keys_a.Reserve(hm * sizeof(uint64_t)));
  CAB_RETURN_IF_ERROR(ws.block_keys_b.Reserve(hm * sizeof(uint64_t)));
  CAB_RETURN_IF_ERROR(ws.block_rank.Reserve(hm * sizeof(int32_t)));
  CAB_RETURN_IF_ERROR(LaunchBlockMinCurvature(pred.graph(), DeviceMaskParams::From(mp), ws.block_min.as<float>(),
                                              ws.has_edge.as<int32_t>(), stream));
  CAB_RETURN_IF_ERROR(LaunchBlockKeys(ws.block_min.as<float>(), ws.has_edge.as<int32_t>(), heads, M,
                                      ws.block_keys_a.as<uint64_t>(), stream));
  CAB_RETURN_IF_ERROR(SortSegments64(ws.block_keys_a.as<uint64_t>(), ws.block_keys_b.as<uint64_t>(), heads, M, 64,
                                     ws.sort_temp, ws.offsets, stream));
  return LaunchBlockRanks(ws.block_keys_b.as<uint64_t>(), heads, M, ws.block_rank.as<int32_t>(), stream);
}

}  // namespace

absl::StatusOr<KeepIndices> EvictOnDevice(DevicePredictor& pred, EvictWorkspace& ws, const EvictInputs& in,
                                          const EvictParams& p, const cpu::EvictShape& s, bool* non_finite) {
  *non_finite = false;
  if (p.policy == EvictPolicy::kRandom) return absl::InternalError("random eviction runs on the CPU backend");
  const int heads = s.batch * s.kv_heads;
  const int64_t n = s.tokens, keep = std::min(p.keep, n);
  if (n >= (int64_t{1} << 31)) return absl::InvalidArgumentError(absl::StrCat("tokens: ", n, " must be < 2^31"));
  KeepIndices out;
  out.batch = s.batch;
  out.kv_heads = s.kv_heads;
  out.per_head = keep;
  out.indices.resize(static_cast<size_t>(heads) * keep);
  if (keep == n) {  // everything is kept
    for (int h = 0; h < heads; ++h) std::iota(out.indices.begin() + h * keep, out.indices.begin() + (h + 1) * keep, 0);
    return out;
  }
  if (keep == 0) return out;

  CAB_CUDA_RETURN(cudaSetDevice(pred.device()));
  const cudaStream_t stream = pred.stream();
  const size_t hn = static_cast<size_t>(heads) * n;
  CAB_RETURN_IF_ERROR(ws.value.Reserve(hn * sizeof(float)));
  CAB_RETURN_IF_ERROR(ws.keys_a.Reserve(hn * sizeof(uint64_t)));
  CAB_RETURN_IF_ERROR(ws.keys_b.Reserve(hn * sizeof(uint64_t)));
  CAB_RETURN_IF_ERROR(ws.out_a.Reserve(heads * keep * sizeof(uint32_t)));
  CAB_RETURN_IF_ERROR(ws.out_b.Reserve(heads * keep * sizeof(uint32_t)));
  uint64_t* ka = ws.keys_a.as<uint64_t>();
  uint64_t* kb = ws.keys_b.as<uint64_t>();
  const uint32_t* order = nullptr;  // cab: the sorted keys' low bits are importance ranks

  switch (p.policy) {
    case EvictPolicy::kStreaming:
      CAB_RETURN_IF_ERROR(LaunchStreaming(heads, n, keep, std::min<int64_t>(p.sink_tokens, keep),
                                          ws.out_a.as<uint32_t>(), stream));
      break;
    case EvictPolicy::kH2O: {
      CAB_RETURN_IF_ERROR(Upload(*in.scores, ws.raw_scores, ws.scores_f, stream));
      CAB_RETURN_IF_ERROR(LaunchGroupMean(ws.scores_f.as<float>(), heads, s.score_group, n, ws.value.as<float>(), stream));
      const int64_t recent = Share(p.h2o_local_ratio, keep);
      CAB_RETURN_IF_ERROR(LaunchTopKeys(ws.value.as<float>(), heads, n, n - recent, n, ka, stream));
      break;
    }
    case EvictPolicy::kSnapKV: {
      CAB_RETURN_IF_ERROR(Upload(*in.keys, ws.raw_keys, ws.keys_f, stream));
      CAB_RETURN_IF_ERROR(Upload(*in.window, ws.raw_window, ws.window_f, stream));
      const int64_t prefix = n - s.window_len, recent = std::min<int64_t>(s.window_len, keep);
      const bool vote = prefix > 0 && recent < keep;
      if (vote) CAB_RETURN_IF_ERROR(SnapKVVotes(pred, ws, s, p, heads, n, prefix));
      CAB_RETURN_IF_ERROR(LaunchTopKeys(ws.value.as<float>(), heads, n, n - recent, vote ? prefix : 0, ka, stream));
      break;
    }
    case EvictPolicy::kCab: {
      CAB_RETURN_IF_ERROR(Upload(*in.keys, ws.raw_keys, ws.keys_f, stream));
      // The CPU coarsens the keys first and refuses a non-finite element; let it name the element.
      CAB_RETURN_IF_ERROR(ws.flag.Reserve(sizeof(int)));
      CAB_RETURN_IF_ERROR(LaunchAnyNonFinite(ws.keys_f.as<float>(), static_cast<int64_t>(hn) * s.dim,
                                             ws.flag.as<int>(), stream));
      int flag = 0;
      CAB_CUDA_RETURN(cudaMemcpyAsync(&flag, ws.flag.as<int>(), sizeof(int), cudaMemcpyDeviceToHost, stream));
      CAB_CUDA_RETURN(cudaStreamSynchronize(stream));
      if (flag) {
        *non_finite = true;
        return KeepIndices{};
      }
      if (in.scores) {  // importance: the group-averaged score, else the key's L2 norm
        CAB_RETURN_IF_ERROR(Upload(*in.scores, ws.raw_scores, ws.scores_f, stream));
        CAB_RETURN_IF_ERROR(LaunchGroupMean(ws.scores_f.as<float>(), heads, s.score_group, n, ws.value.as<float>(), stream));
      } else {
        CAB_RETURN_IF_ERROR(LaunchRowNorms(ws.keys_f.as<float>(), static_cast<int64_t>(hn), s.dim,
                                           ws.value.as<float>(), stream));
      }
      // Importance order: order[h, rank] = token, rank[h, token] = its position.
      CAB_RETURN_IF_ERROR(ws.order.Reserve(hn * sizeof(uint32_t)));
      CAB_RETURN_IF_ERROR(ws.rank.Reserve(hn * sizeof(uint32_t)));
      CAB_RETURN_IF_ERROR(ws.taken.Reserve(hn));
      CAB_RETURN_IF_ERROR(LaunchTopKeys(ws.value.as<float>(), heads, n, n, n, ka, stream));
      CAB_RETURN_IF_ERROR(SortSegments64(ka, kb, heads, n, 64, ws.sort_temp, ws.offsets, stream));
      CAB_RETURN_IF_ERROR(LaunchRanks(kb, heads, n, ws.order.as<uint32_t>(), ws.rank.as<uint32_t>(), stream));
      const int64_t recent = Share(p.local_ratio, keep);
      const int64_t bridges = std::min(Share(p.bridge_ratio, keep), keep - recent);
      if (bridges > 0) {
        CAB_RETURN_IF_ERROR(RankBridgeBlocks(pred, ws, *in.keys, s, p, heads));
        CAB_RETURN_IF_ERROR(LaunchBridgeKeys(ws.block_rank.as<int32_t>(), ws.rank.as<uint32_t>(), heads, n,
                                             p.block_size, n - recent, ka, stream));
        CAB_RETURN_IF_ERROR(SortSegments64(ka, kb, heads, n, 64, ws.sort_temp, ws.offsets, stream));
      }
      CAB_RETURN_IF_ERROR(LaunchFinalKeys(kb, ws.order.as<uint32_t>(), ws.rank.as<uint32_t>(), heads, n, recent,
                                          bridges, ws.taken.as<uint8_t>(), ka, stream));
      order = ws.order.as<uint32_t>();
      break;
    }
    case EvictPolicy::kRandom:
      break;
  }
  if (p.policy != EvictPolicy::kStreaming) {
    // The first `keep` keys of each head are its kept tokens; a second sort puts them in ascending order.
    CAB_RETURN_IF_ERROR(SortSegments64(ka, kb, heads, n, 64, ws.sort_temp, ws.offsets, stream));
    CAB_RETURN_IF_ERROR(LaunchTakeFirst(kb, order, heads, n, keep, ws.out_b.as<uint32_t>(), stream));
    CAB_RETURN_IF_ERROR(SortSegments32(ws.out_b.as<uint32_t>(), ws.out_a.as<uint32_t>(), heads, keep, 32,
                                       ws.sort_temp, ws.offsets, stream));
  }
  const size_t count = static_cast<size_t>(heads) * keep;
  CAB_RETURN_IF_ERROR(ws.out_host.Reserve(count * sizeof(uint32_t)));
  CAB_CUDA_RETURN(cudaMemcpyAsync(ws.out_host.as<uint32_t>(), ws.out_a.as<uint32_t>(), count * sizeof(uint32_t),
                                  cudaMemcpyDeviceToHost, stream));
  CAB_CUDA_RETURN(cudaStreamSynchronize(stream));
  const uint32_t* host = ws.out_host.as<uint32_t>();
  for (size_t i = 0; i < count; ++i) out.indices[i] = host[i];
  return out;
}

}  // namespace cab::cuda
