// Block scores and top lists in one kernel (SPEC 2): each CTA computes a 16-row tile of S with
// tensor cores (mma.sync, bf16 in, fp32 accumulation) into shared memory and runs the sampled-threshold row pass (threshold_row.cuh) on it,
// so S is never written to or re-read from device memory.
//
// Why: at N = 128k, block 128 (M = 1024, 32 heads) the score GEMM wrote 80 MiB of S and the top lists
// read 64 MiB back (0.059 + 0.078 ms, H100 run 76); that traffic also slowed the coarsening read
// that the pipelined benchmark overlaps with the prediction (bench/results/gpu-pipeline-h100.md).
// Applies to the dot estimators on bf16 operands (the max-L2 representatives of bf16 activations)
// where nothing after the top lists reads S (FusedScoreTopListsApply); elsewhere LaunchScores and
// LaunchTopLists run as before. CAB_CUDA_FUSED_SCORES=0 turns it off (for comparisons).
#pragma once

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "predict_kernels.h"
#include "scores.h"

namespace cab::cuda {

// Whether the fused kernel serves these scores and lists: bf16 operands ready (a.bf16_ready), a dot
// estimator, D of 32, 64, 128 or 256, lists of at most 256, S read by nothing later
// (!graph_only, !SelectReadsScores), the row tile fits in shared memory, and neither
// CAB_CUDA_FUSED_SCORES=0 nor another CAB_CUDA_TOPLISTS kind asked for.
bool FusedScoreTopListsApply(const ScoreArgs& a, const GraphBuffers& g, const DeviceMaskParams& p, bool graph_only);

// S (scaled by 1 / sqrt(D), fp32 accumulation) and the outputs of LaunchTopLists: row max, row_inv =
// NaN, top lists, and with set_edges the graph's edges (g.adj zeroed before, LaunchClearGraph).
absl::Status LaunchFusedScoreTopLists(const ScoreArgs& a, const GraphBuffers& g, const DeviceMaskParams& p,
                                      bool set_edges, cudaStream_t stream);

}  // namespace cab::cuda
