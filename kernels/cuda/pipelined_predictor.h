// The predictor on device-resident tokens with the coarsening and the prediction overlapped by head
// groups: one coarsening launch of Q and K on a green partition of the SMs (sm_partition.h) streams
// the heads group by group and counts each group's finished blocks (CoarsenArgs::group_done); the
// predictor's stream waits on each count (stream_wait.h) and predicts that group (EnqueueHeads)
// while later groups are still read. The mask is the one the sequential order gives (same kernels
// per head; tests/cuda/cuda_pipeline_test.cc checks that it is identical).
//
// Why: at N = 128k the 2 GiB read of Q and K takes ~0.74 ms and the prediction after it ~0.18 ms on
// an H100; overlapped, only the last group's prediction is left after the read
// (bench/results/gpu-pipeline-h100.md).
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/params.h"
#include "coarsen_kernel.h"
#include "device_predictor.h"
#include "sm_partition.h"

namespace cab::cuda {

struct PipelineOptions {
  int groups = 8;         // head groups (at most one per kv head, at most CoarsenArgs::kMaxParts)
  int coarsen_sms = 64;   // SMs of the coarsening's partition; the prediction may use every SM
  // Prediction streams, group g on stream g % streams: a group's prediction need not wait for the
  // one before it to drain (the head ranges write disjoint parts of the predictor's buffers).
  int streams = 2;
  // The last two groups hold 2 and 1 kv rows (the others share the rest, larger first), so that the
  // prediction left after the read is short; equal groups otherwise, or where rows are too few.
  // (H100, 128k / block 128: no faster than equal groups, bench/results/gpu-pipeline-h100.md.)
  bool taper = false;
  // The coarsening's copies carry the L2 evict-first hint (CoarsenArgs::evict_first).
  bool evict_first = true;
};

class PipelinedPredictor {
 public:
  // `pred` (not owned, outlives this) gives the stream, the buffers and the mask.
  static absl::StatusOr<std::unique_ptr<PipelinedPredictor>> Create(DevicePredictor* pred, const PipelineOptions& o);
  ~PipelinedPredictor();
  PipelinedPredictor(const PipelinedPredictor&) = delete;
  PipelinedPredictor& operator=(const PipelinedPredictor&) = delete;

  // Coarsens q and k (their max-L2 representatives in bf16, maxl2_bf16, are what the prediction
  // reads; any other outputs they ask for are written too) and enqueues the prediction of rows
  // [row_begin, row_end) of every head, group by group. in: the shape and the representatives'
  // device pointers (bf16_exact, q_rep_bf16 / k_feature_bf16 = q.maxl2_bf16 / k.maxl2_bf16).
  // Asynchronous on pred's stream; then pred.DownloadMask gives the mask. Errors before anything
  // is launched where the shape does not fit the pipeline (a dot estimator on bf16 representatives,
  // one bulk-fed coarsening launch for both tensors, whole kv-head groups).
  absl::Status Enqueue(const CoarsenArgs& q, const CoarsenArgs& k, const PredictorInputs& in, const MaskParams& p,
                       int row_begin, int row_end);

  // After Enqueue: the groups used, and events on the last run's timeline (recorded when the run
  // started, when the coarsening ended, and when each group's prediction ended).
  int groups() const { return groups_; }
  cudaEvent_t started() const { return started_; }
  cudaEvent_t coarsened() const { return coarsened_; }
  cudaEvent_t predicted(int group) const { return predicted_[group]; }
  int coarsen_sms() const { return partition_.sms; }

 private:
  PipelinedPredictor() = default;
  DevicePredictor* pred_ = nullptr;
  PipelineOptions options_;
  PartitionStream partition_;
  std::vector<cudaStream_t> extra_streams_;  // prediction streams 1 .. streams - 1 (owned)
  cudaEvent_t joined_ = nullptr;             // reused: graphs cleared (fork), then each extra stream's end (join)
  uint32_t* counters_ = nullptr;  // [0, 2): the coarsening's work counter; [2, 2 + kMaxParts): group counts
  cudaEvent_t started_ = nullptr, coarsened_ = nullptr;
  std::vector<cudaEvent_t> predicted_;
  int groups_ = 0;
};

}  // namespace cab::cuda
