#include "device_predictor.h"

#include <cstdlib>

#include "cuda_status.h"
#include "scores_top_lists.h"
#include "select.h"  // kernels/cpu: SelectionGraphParams

namespace cab::cuda {

DeviceMaskParams DeviceMaskParams::From(const MaskParams& p) {
  DeviceMaskParams d;
  d.policy = static_cast<int>(p.policy);
  d.causal = p.graph.causal ? 1 : 0;
  d.degree = p.graph.degree;
  d.curvature = static_cast<int>(p.graph.curvature);
  d.lambda = p.graph.lambda;
  d.sparsity = p.sparsity;
  d.blocks_per_row = p.blocks_per_row;
  d.min_keep = p.min_keep;
  d.sink_blocks = p.sink_blocks;
  d.local_blocks = p.local_blocks;
  d.local_ratio = p.local_ratio;
  d.bridge_ratio = p.bridge_ratio;
  d.adaptive_tau = p.adaptive_tau;
  d.adaptive_z = p.adaptive_z;
  return d;
}

absl::StatusOr<std::unique_ptr<DevicePredictor>> DevicePredictor::Create(int device, GemmPolicy gemm) {
  std::unique_ptr<DevicePredictor> d(new DevicePredictor());
  d->device_ = device;
  d->gemm_ = gemm;
  CAB_CUDA_RETURN(cudaSetDevice(device));
  CAB_CUDA_RETURN(cudaStreamCreateWithFlags(&d->own_stream_, cudaStreamNonBlocking));
  d->stream_ = d->own_stream_;
  CAB_CUBLAS_RETURN(cublasCreate(&d->cublas_));
  CAB_CUBLAS_RETURN(cublasSetStream(d->cublas_, d->stream_));
  for (auto& e : d->events_) CAB_CUDA_RETURN(cudaEventCreate(&e));
  return d;
}

DevicePredictor::~DevicePredictor() {
  cudaSetDevice(device_);
  for (auto& e : events_) if (e) cudaEventDestroy(e);
  if (cublas_) cublasDestroy(cublas_);
  if (own_stream_) cudaStreamDestroy(own_stream_);
}

absl::Status DevicePredictor::ClearGraphs(int total_heads, int blocks) {
  CAB_CUDA_RETURN(cudaSetDevice(device_));
  const size_t bytes = static_cast<size_t>(total_heads) * blocks * ((blocks + 31) / 32) * sizeof(uint32_t);
  CAB_RETURN_IF_ERROR(adj_.Reserve(bytes));
  CAB_CUDA_RETURN(cudaMemsetAsync(adj_.as<uint32_t>(), 0, bytes, stream_));
  return absl::OkStatus();
}

absl::Status DevicePredictor::Enqueue(const PredictorInputs& in, const MaskParams& p, int row_begin, int row_end,
                                      bool graph_only) {
  return EnqueueRange(in, p, row_begin, row_end, graph_only, 0, in.batch * in.q_heads, true);
}

absl::Status DevicePredictor::EnqueueHeads(const PredictorInputs& in, const MaskParams& p, int row_begin, int row_end,
                                           int head0, int total_heads, bool graphs_cleared) {
  if (head0 < 0 || head0 + in.batch * in.q_heads > total_heads) {
    return absl::InvalidArgumentError("predictor: head range outside the request's heads");
  }
  return EnqueueRange(in, p, row_begin, row_end, false, head0, total_heads, !graphs_cleared);
}

absl::Status DevicePredictor::EnqueueRange(const PredictorInputs& in, const MaskParams& p, int row_begin, int row_end,
                                           bool graph_only, int head0, int total_heads, bool clear_graph) {
  CAB_CUDA_RETURN(cudaSetDevice(device_));
  const DeviceMaskParams dp = DeviceMaskParams::From(p);
  const int M = in.blocks;
  const int64_t heads = static_cast<int64_t>(in.batch) * in.q_heads;
  const int W = (M + 31) / 32;
  const int stride = graph_only ? std::min(dp.degree + 1, M) : TopCapacity(dp, M);
  rows_ = graph_only ? 0 : row_end - row_begin;
  row_begin_ = row_begin;
  mask_heads_ = total_heads;

  // Buffers for every head of the request; this range writes from head0 on. (A later range finds
  // them large enough: no reallocation under work in flight.)
  const size_t elems_q = static_cast<size_t>(heads) * M * in.dim;
  const size_t elems_k = static_cast<size_t>(in.batch) * in.kv_heads * M * in.dim;
  const size_t all = static_cast<size_t>(total_heads), h0 = static_cast<size_t>(head0);
  CAB_RETURN_IF_ERROR(scores_.Reserve(all * M * M * sizeof(float)));
  CAB_RETURN_IF_ERROR(top_.Reserve(all * M * stride * sizeof(int32_t)));
  CAB_RETURN_IF_ERROR(top_count_.Reserve(all * M * sizeof(int32_t)));
  CAB_RETURN_IF_ERROR(row_max_.Reserve(all * M * sizeof(float)));
  CAB_RETURN_IF_ERROR(row_inv_.Reserve(all * M * sizeof(float)));
  CAB_RETURN_IF_ERROR(adj_.Reserve(all * M * W * sizeof(uint32_t)));
  CAB_RETURN_IF_ERROR(degree_.Reserve(all * M * sizeof(int32_t)));
  CAB_RETURN_IF_ERROR(keep_.Reserve(std::max<size_t>(1, all * rows_ * W * sizeof(uint32_t))));

  ScoreArgs sa;
  sa.batch = in.batch;
  sa.q_heads = in.q_heads;
  sa.kv_heads = in.kv_heads;
  sa.blocks = M;
  sa.dim = in.dim;
  const Estimator estimator = cpu::SelectionGraphParams(p).estimator;  // quest scores by its bounds
  sa.quest = estimator == Estimator::kQuest;
  sa.q = in.q_rep;
  sa.k = in.k_feature;
  sa.kmin = in.kmin;
  sa.kmax = in.kmax;
  sa.causal = p.graph.causal;
  sa.scores = scores_.as<float>();
  switch (gemm_) {
    case GemmPolicy::kAuto: sa.mode = in.bf16_exact ? GemmMode::kBf16 : GemmMode::kFp32; break;
    case GemmPolicy::kFp32: sa.mode = GemmMode::kFp32; break;
    case GemmPolicy::kTf32: sa.mode = GemmMode::kTf32; break;
    case GemmPolicy::kBf16: sa.mode = GemmMode::kBf16; break;
  }
  if (!sa.quest && sa.mode == GemmMode::kBf16 && in.q_rep_bf16 && in.k_feature_bf16) {
    // The GEMM only reads these (ScoreArgs names them as its workspace).
    sa.q16 = const_cast<__nv_bfloat16*>(in.q_rep_bf16);
    sa.k16 = const_cast<__nv_bfloat16*>(in.k_feature_bf16);
    sa.bf16_ready = true;
  } else if (!sa.quest && sa.mode == GemmMode::kBf16) {
    CAB_RETURN_IF_ERROR(q16_.Reserve(elems_q * 2));
    CAB_RETURN_IF_ERROR(k16_.Reserve(elems_k * 2));
    sa.q16 = q16_.as<__nv_bfloat16>();
    sa.k16 = k16_.as<__nv_bfloat16>();
  }

  // Quest reads the fp32 queries and the key bounds; a dot product the fp32 pair unless the bf16
  // GEMM's operands are ready.
  const bool inputs_present = sa.quest ? in.q_rep && in.kmin && in.kmax : sa.bf16_ready || (in.q_rep && in.k_feature);
  if (!inputs_present) {
    return absl::InvalidArgumentError("predictor: the fp32 representatives (or Quest's bounds) these scores read are missing");
  }
  graph_.heads = static_cast<int>(heads);
  graph_.blocks = M;
  graph_.top_stride = stride;
  graph_.scores = scores_.as<float>() + h0 * M * M;
  graph_.top = top_.as<int32_t>() + h0 * M * stride;
  graph_.top_count = top_count_.as<int32_t>() + h0 * M;
  graph_.row_max = row_max_.as<float>() + h0 * M;
  graph_.row_inv = row_inv_.as<float>() + h0 * M;
  graph_.adj = adj_.as<uint32_t>() + h0 * M * W;
  graph_.degree = degree_.as<int32_t>() + h0 * M;

  // magnitude and quest rank by S alone: no graph needed. The graph's bitsets are zeroed first (the
  // top-list pass may set the edges), its degrees counted only where the selection does not count
  // them itself (the Graph() op and the CTA-per-row selection read them).
  const bool needs_graph = graph_only || p.policy == MaskPolicy::kCab || p.policy == MaskPolicy::kAdaptive;
  const bool degree_pass = graph_only || !SelectCountsDegrees(dp, M);
  CAB_CUDA_RETURN(cudaEventRecord(events_[0], stream_));
  if (needs_graph && clear_graph) CAB_RETURN_IF_ERROR(LaunchClearGraph(graph_, stream_));
  bool edges_set = false;
  if (FusedScoreTopListsApply(sa, graph_, dp, graph_only)) {
    // S stays in shared memory; the stage timings put the fused kernel under "scores".
    CAB_RETURN_IF_ERROR(LaunchFusedScoreTopLists(sa, graph_, dp, needs_graph, stream_));
    edges_set = needs_graph;
    CAB_CUDA_RETURN(cudaEventRecord(events_[1], stream_));
  } else {
    // CAB_CUDA_FULL_SCORES=1 computes all of S in one GEMM (for benchmarks comparing the two).
    static const bool full_scores = std::getenv("CAB_CUDA_FULL_SCORES") != nullptr;
    CAB_RETURN_IF_ERROR(LaunchScores(cublas_, sa, stream_, full_scores ? nullptr : &causal_scores_));
    CAB_CUDA_RETURN(cudaEventRecord(events_[1], stream_));
    CAB_RETURN_IF_ERROR(LaunchTopLists(graph_, dp, graph_only, needs_graph, &edges_set, stream_));
  }
  CAB_CUDA_RETURN(cudaEventRecord(events_[2], stream_));
  if (needs_graph) CAB_RETURN_IF_ERROR(LaunchGraph(graph_, dp, !edges_set, degree_pass, stream_));
  CAB_CUDA_RETURN(cudaEventRecord(events_[3], stream_));
  if (!graph_only) {
    CAB_RETURN_IF_ERROR(LaunchSelect(graph_, dp, row_begin, rows_, keep_.as<uint32_t>() + h0 * rows_ * W, stream_));
  }
  CAB_CUDA_RETURN(cudaEventRecord(events_[4], stream_));
  return absl::OkStatus();
}

absl::StatusOr<std::array<float, kStageCount>> DevicePredictor::StageMs() {
  CAB_CUDA_RETURN(cudaEventSynchronize(events_[kStageCount]));
  std::array<float, kStageCount> ms{};
  for (int s = 0; s < kStageCount; ++s) CAB_CUDA_RETURN(cudaEventElapsedTime(&ms[s], events_[s], events_[s + 1]));
  return ms;
}

absl::Status DevicePredictor::DownloadMask(BlockMask* out) {
  const int M = graph_.blocks, W = graph_.words();
  const int64_t rows = static_cast<int64_t>(mask_heads_) * rows_;
  out->cols = M;
  out->row_begin = row_begin_;
  out->rows = rows_;
  CAB_RETURN_IF_ERROR(csr_.Build(keep_.as<uint32_t>(), rows, W, stream_));
  return csr_.Download(&out->row_offsets, &out->col_indices, stream_);
}

absl::StatusOr<DevicePredictor::HeadDump> DevicePredictor::DumpHead(const MaskParams& p) {
  const int M = graph_.blocks, W = graph_.words();
  const size_t mm = static_cast<size_t>(M) * M;
  CAB_RETURN_IF_ERROR(curvature_.Reserve(mm * sizeof(float)));
  CAB_RETURN_IF_ERROR(LaunchDenseCurvature(graph_, DeviceMaskParams::From(p), 1, curvature_.as<float>(), stream_));
  HeadDump d;
  d.scores.resize(mm);
  d.curvature.resize(mm);
  d.row_max.resize(M);
  d.row_inv.resize(M);
  d.adj.resize(static_cast<size_t>(M) * W);
  d.degree.resize(M);
  CAB_CUDA_RETURN(cudaMemcpyAsync(d.scores.data(), graph_.scores, mm * 4, cudaMemcpyDeviceToHost, stream_));
  CAB_CUDA_RETURN(cudaMemcpyAsync(d.curvature.data(), curvature_.as<float>(), mm * 4, cudaMemcpyDeviceToHost, stream_));
  CAB_CUDA_RETURN(cudaMemcpyAsync(d.row_max.data(), graph_.row_max, M * 4, cudaMemcpyDeviceToHost, stream_));
  CAB_CUDA_RETURN(cudaMemcpyAsync(d.row_inv.data(), graph_.row_inv, M * 4, cudaMemcpyDeviceToHost, stream_));
  CAB_CUDA_RETURN(cudaMemcpyAsync(d.adj.data(), graph_.adj, d.adj.size() * 4, cudaMemcpyDeviceToHost, stream_));
  CAB_CUDA_RETURN(cudaMemcpyAsync(d.degree.data(), graph_.degree, M * 4, cudaMemcpyDeviceToHost, stream_));
  CAB_CUDA_RETURN(cudaStreamSynchronize(stream_));
  return d;
}

}  // namespace cab::cuda
