// The predictor on one GPU, on device-resident coarse blocks: scores -> top lists -> graph ->
// curvature + selection, all enqueued on one stream with buffers reused across requests.
// Used by the CUDA backend (after staging host data) and by bench/gpu (data already on the device).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/mask.h"
#include "cab/params.h"
#include "device_buffers.h"
#include "mask_csr.h"
#include "predict_kernels.h"
#include "scores.h"

namespace cab::cuda {

// Which precision the dot-product scores use.
enum class GemmPolicy {
  kAuto,  // bf16 tensor cores when the operands are exactly bf16 values, else fp32
  kFp32,
  kTf32,
  kBf16,
};

struct PredictorInputs {  // device pointers, row-major floats
  int batch = 0, q_heads = 0, kv_heads = 0, blocks = 0, dim = 0;
  const float* q_rep = nullptr;      // [B, Hq, M, D]: the query coarsening's vector
  const float* k_feature = nullptr;  // [B, Hkv, M, D]: max-L2 or mean key (dot estimators)
  const float* kmin = nullptr;       // [B, Hkv, M, D]: quest
  const float* kmax = nullptr;
  bool bf16_exact = false;           // every q_rep / k_feature value is a bf16 value
  // Optional, with bf16_exact: q_rep / k_feature already in bf16 (from coarsening), used by the
  // bf16 score GEMM instead of casting.
  const __nv_bfloat16* q_rep_bf16 = nullptr;
  const __nv_bfloat16* k_feature_bf16 = nullptr;
};

// Stages timed with CUDA events for bench/ and the server's stage metrics.
enum Stage { kScores = 0, kTopLists, kGraph, kSelect, kStageCount };

class DevicePredictor {
 public:
  static absl::StatusOr<std::unique_ptr<DevicePredictor>> Create(int device, GemmPolicy gemm);
  ~DevicePredictor();

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  // Enqueues on `s` (not owned; for instance a stream on part of the SMs, sm_partition.h) from now
  // on; nullptr: back to the predictor's own stream.
  void UseStream(cudaStream_t s) { stream_ = s ? s : own_stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  // Whether the dot-product scores run on bf16 operands for inputs with this bf16_exact (then
  // PredictorInputs' bf16 pointers suffice and the fp32 ones may be null).
  bool Bf16Scores(bool bf16_exact) const {
    return gemm_ == GemmPolicy::kBf16 || (gemm_ == GemmPolicy::kAuto && bf16_exact);
  }
  // The graph of the last Enqueue (device pointers), for eviction's bridge ranking.
  const GraphBuffers& graph() const { return graph_; }

  // Enqueues the whole prediction for rows [row_begin, row_end) of `p` (row_end resolved by the
  // caller). graph_only: stop after the graph (for Graph()). Asynchronous.
  absl::Status Enqueue(const PredictorInputs& in, const MaskParams& p, int row_begin, int row_end, bool graph_only);
  // The prediction of heads [head0, head0 + in.batch * in.q_heads) of a request of total_heads
  // (batch * query heads) heads, `in` pointing at those heads' operands: each head's outputs land
  // at its place in the buffers, so that once every head has been enqueued (in any number of
  // ranges, on this stream) DownloadMask returns the mask one Enqueue of all heads gives. For a
  // pipeline that predicts head groups as their coarsening ends (pipelined_predictor.h).
  // graphs_cleared: ClearGraphs ran for this request, the range does not zero its bitsets itself.
  absl::Status EnqueueHeads(const PredictorInputs& in, const MaskParams& p, int row_begin, int row_end, int head0,
                            int total_heads, bool graphs_cleared = false);
  // Zeroes the graph bitsets of all total_heads heads of `blocks` blocks (enqueued), for ranges
  // enqueued with graphs_cleared: a pipeline clears before it waits for the coarsening, so that one
  // kernel less runs after the read.
  absl::Status ClearGraphs(int total_heads, int blocks);

  // Converts the kept bitsets into a CSR BlockMask on the device (MaskCsr) and downloads it; waits.
  absl::Status DownloadMask(BlockMask* out);
  // Waits and returns each stage's time of the last Enqueue, in milliseconds.
  absl::StatusOr<std::array<float, kStageCount>> StageMs();

  // For Graph(): after a graph_only Enqueue of one head, the head's dense S, row stats, adjacency
  // bitsets, degrees and dense curvature (computed here).
  struct HeadDump {
    std::vector<float> scores, row_max, row_inv, curvature;
    std::vector<uint32_t> adj;
    std::vector<int32_t> degree;
  };
  absl::StatusOr<HeadDump> DumpHead(const MaskParams& p);

 private:
  DevicePredictor() = default;
  int device_ = 0;
  GemmPolicy gemm_ = GemmPolicy::kAuto;
  cudaStream_t own_stream_ = nullptr;  // created and destroyed here
  cudaStream_t stream_ = nullptr;      // where work goes (own_stream_ unless UseStream)
  cublasHandle_t cublas_ = nullptr;
  std::array<cudaEvent_t, kStageCount + 1> events_{};
  DeviceBuffer scores_, top_, top_count_, row_max_, row_inv_, adj_, degree_, keep_, q16_, k16_, curvature_;
  MaskCsr csr_;
  CausalScorePlan causal_scores_;
  absl::Status EnqueueRange(const PredictorInputs& in, const MaskParams& p, int row_begin, int row_end,
                            bool graph_only, int head0, int total_heads, bool clear_graph);
  GraphBuffers graph_;  // the last range's view (pointers at its first head)
  int rows_ = 0, row_begin_ = 0;
  int mask_heads_ = 0;  // heads of the mask DownloadMask assembles
};

}  // namespace cab::cuda
