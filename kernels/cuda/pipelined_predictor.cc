#include "pipelined_predictor.h"

#include <algorithm>

#include "cuda_status.h"
#include "select.h"  // kernels/cpu: SelectionGraphParams
#include "stream_wait.h"

namespace cab::cuda {

absl::StatusOr<std::unique_ptr<PipelinedPredictor>> PipelinedPredictor::Create(DevicePredictor* pred,
                                                                               const PipelineOptions& o) {
  if (pred == nullptr || o.groups < 1 || o.coarsen_sms < 1 || o.streams < 1 || o.streams > 4) {
    return absl::InvalidArgumentError("pipeline: needs a predictor, at least one group and one SM, 1 to 4 streams");
  }
  std::unique_ptr<PipelinedPredictor> p(new PipelinedPredictor());
  p->pred_ = pred;
  p->options_ = o;
  CAB_CUDA_RETURN(cudaSetDevice(pred->device()));
  auto partition = CreatePartitionStream(pred->device(), o.coarsen_sms);
  if (!partition.ok()) return partition.status();
  p->partition_ = *partition;
  const size_t counter_bytes = (2 + CoarsenArgs::kMaxParts) * sizeof(uint32_t);
  CAB_CUDA_RETURN(cudaMalloc(&p->counters_, counter_bytes));
  CAB_CUDA_RETURN(cudaMemset(p->counters_, 0, counter_bytes));
  CAB_CUDA_RETURN(cudaEventCreate(&p->started_));
  CAB_CUDA_RETURN(cudaEventCreate(&p->coarsened_));
  CAB_CUDA_RETURN(cudaEventCreateWithFlags(&p->joined_, cudaEventDisableTiming));
  for (int i = 1; i < o.streams; ++i) {
    cudaStream_t s = nullptr;
    CAB_CUDA_RETURN(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    p->extra_streams_.push_back(s);
  }
  p->predicted_.resize(CoarsenArgs::kMaxParts, nullptr);
  for (auto& e : p->predicted_) CAB_CUDA_RETURN(cudaEventCreate(&e));
  return p;
}

PipelinedPredictor::~PipelinedPredictor() {
  if (pred_) cudaSetDevice(pred_->device());
  if (partition_.stream) cudaStreamSynchronize(partition_.stream);
  for (auto& e : predicted_) if (e) cudaEventDestroy(e);
  for (cudaStream_t s : extra_streams_) {
    cudaStreamSynchronize(s);
    cudaStreamDestroy(s);
  }
  if (joined_) cudaEventDestroy(joined_);
  if (coarsened_) cudaEventDestroy(coarsened_);
  if (started_) cudaEventDestroy(started_);
  if (counters_) cudaFree(counters_);
  DestroyPartitionStream(&partition_);
}

absl::Status PipelinedPredictor::Enqueue(const CoarsenArgs& q, const CoarsenArgs& k, const PredictorInputs& in,
                                         const MaskParams& p, int row_begin, int row_end) {
  const int q_rows = q.batch * q.heads, kv_rows = k.batch * k.heads;
  if (kv_rows < 1 || q_rows % kv_rows != 0 || q.maxl2_bf16 == nullptr || k.maxl2_bf16 == nullptr ||
      in.q_rep_bf16 != q.maxl2_bf16 || in.k_feature_bf16 != k.maxl2_bf16 || !in.bf16_exact ||
      in.batch * in.q_heads != q_rows || in.batch * in.kv_heads != kv_rows || in.blocks != q.blocks()) {
    return absl::InvalidArgumentError("pipeline: inputs must be the bf16 max-L2 representatives of q and k, whole kv groups");
  }
  if (cpu::SelectionGraphParams(p).estimator != Estimator::kMaxL2) {
    return absl::InvalidArgumentError("pipeline: the scores must come from the max-L2 representatives");
  }
  CAB_CUDA_RETURN(cudaSetDevice(pred_->device()));
  const int group_q = q_rows / kv_rows;  // query heads per kv head: a group holds whole kv groups
  const int G = std::min({options_.groups, kv_rows, CoarsenArgs::kMaxParts});
  // kv rows per group, the larger ones first: the prediction after the last group is the shortest.
  std::vector<int> kv_part(G, 0);
  const bool taper = options_.taper && G >= 3 && kv_rows - 3 >= 2 * (G - 2);  // the rest still >= 2 per group
  const int tail = taper ? 2 : 0, rest = kv_rows - (taper ? 3 : 0), even = G - tail;
  for (int g = 0; g < even; ++g) kv_part[g] = rest / even + (g < rest % even ? 1 : 0);
  if (taper) {
    kv_part[G - 2] = 2;
    kv_part[G - 1] = 1;
  }

  CoarsenArgs qa = q, ka = k;
  uint32_t* counts = counters_ + 2;
  qa.work_counter = ka.work_counter = counters_;
  qa.groups = ka.groups = G;
  qa.group_done = ka.group_done = counts;
  qa.evict_first = ka.evict_first = options_.evict_first;
  for (int g = 0; g < CoarsenArgs::kMaxParts; ++g) {
    qa.part_rows[g] = g < G ? kv_part[g] * group_q : 0;
    ka.part_rows[g] = g < G ? kv_part[g] : 0;
  }
  const cudaStream_t stream = pred_->stream(), side = partition_.stream;
  std::vector<cudaStream_t> streams = {stream};
  streams.insert(streams.end(), extra_streams_.begin(), extra_streams_.end());
  CAB_CUDA_RETURN(cudaEventRecord(started_, stream));
  // Every head's graph zeroed now, not after each group's wait (joined_ marks it for the other
  // prediction streams).
  CAB_RETURN_IF_ERROR(pred_->ClearGraphs(q_rows, in.blocks));
  CAB_CUDA_RETURN(cudaEventRecord(joined_, stream));
  for (cudaStream_t s : streams) {
    if (s != stream) CAB_CUDA_RETURN(cudaStreamWaitEvent(s, joined_, 0));
  }
  CAB_CUDA_RETURN(cudaStreamWaitEvent(side, started_, 0));
  CAB_RETURN_IF_ERROR(LaunchCoarsenPair(qa, ka, side));  // refuses before launching where parts cannot run
  CAB_CUDA_RETURN(cudaEventRecord(coarsened_, side));

  const int M = in.blocks;
  const size_t per_row = static_cast<size_t>(M) * in.dim;  // elements of one (b, h) row's representatives
  groups_ = G;
  absl::Status enqueued = absl::OkStatus();
  for (int g = 0, kv0 = 0; g < G && enqueued.ok(); kv0 += kv_part[g], ++g) {
    const int q0 = kv0 * group_q, nq = kv_part[g] * group_q;
    const cudaStream_t gs = streams[g % streams.size()];
    pred_->UseStream(gs);
    enqueued = EnqueueWaitAtLeast(gs, counts + g, static_cast<uint32_t>((nq + kv_part[g]) * M));
    if (!enqueued.ok()) break;
    PredictorInputs part = in;
    part.batch = 1;  // a group's rows are consecutive (b, h) rows: kv row of query row r is r / group_q
    part.q_heads = nq;
    part.kv_heads = kv_part[g];
    part.q_rep_bf16 = in.q_rep_bf16 + q0 * per_row;
    part.k_feature_bf16 = in.k_feature_bf16 + kv0 * per_row;
    part.q_rep = in.q_rep ? in.q_rep + q0 * per_row : nullptr;
    part.k_feature = in.k_feature ? in.k_feature + kv0 * per_row : nullptr;
    part.kmin = in.kmin ? in.kmin + kv0 * per_row : nullptr;
    part.kmax = in.kmax ? in.kmax + kv0 * per_row : nullptr;
    enqueued = pred_->EnqueueHeads(part, p, row_begin, row_end, q0, q_rows, /*graphs_cleared=*/true);
    if (enqueued.ok()) enqueued = CudaStatus(cudaEventRecord(predicted_[g], gs), "cudaEventRecord");
  }
  pred_->UseStream(stream);
  for (cudaStream_t s : streams) {  // the caller's stream continues after every group
    if (s == stream) continue;
    CAB_CUDA_RETURN(cudaEventRecord(joined_, s));
    CAB_CUDA_RETURN(cudaStreamWaitEvent(stream, joined_, 0));
  }
  // The counts start from zero next time, also after a failed group: after the read has ended.
  CAB_CUDA_RETURN(cudaStreamWaitEvent(stream, coarsened_, 0));
  CAB_CUDA_RETURN(cudaMemsetAsync(counts, 0, G * sizeof(uint32_t), stream));
  return enqueued;
}

}  // namespace cab::cuda
