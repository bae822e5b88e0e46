#include "cuda_backend.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <type_traits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "coarsen_check.h"          // kernels/cpu: the CPU backend's validation, shared
#include "coarsen_kernel.h"
#include "cpu_backend_predict.h"    // kernels/cpu: CheckCoarsePair
#include "cuda_status.h"
#include "device_evictor.h"
#include "device_placement.h"
#include "host_operands.h"
#include "operand_upload.h"
#include "predict_batcher.h"
#include "worker.h"
#include "evict_inputs.h"           // kernels/cpu: ResolveEvictShape, shared validation
#include "select.h"                 // kernels/cpu: NeedOf

namespace cab::cuda {
namespace {

class CudaBackend final : public Backend {
 public:
  CudaBackend(std::vector<std::unique_ptr<Worker>> workers, const CudaBackendOptions& o)
      : workers_(std::move(workers)),
        placement_(static_cast<int>(workers_.size())),
        cpu_(MakeCpuBackend({o.cpu_threads})),
        batcher_(o.max_batch, o.max_queue_delay_us, o.max_batch_score_bytes) {}

  std::string Name() const override { return "cuda"; }
  std::vector<std::string> Devices() const override {
    std::vector<std::string> out;
    for (const auto& w : workers_) out.push_back(w->name);
    return out;
  }

  // The session-less forms are calls without a session (CallContext{}).
  absl::StatusOr<CoarseBlocks> Coarsen(const TensorView& x, int block_size) override {
    return Coarsen(x, block_size, CallContext{});
  }
  absl::StatusOr<MaskResult> PredictMask(const CoarseBlocks& q, const CoarseBlocks& k, const MaskParams& p,
                                         bool diagnostics) override {
    return PredictMask(q, k, p, diagnostics, CallContext{});
  }
  absl::StatusOr<KeepIndices> Evict(const EvictInputs& in, const EvictParams& p) override {
    return Evict(in, p, CallContext{});
  }
  absl::StatusOr<CoarseBlocks> Coarsen(const TensorView& x, int block_size, const CallContext& call) override;
  absl::StatusOr<MaskResult> PredictMask(const CoarseBlocks& q, const CoarseBlocks& k, const MaskParams& p,
                                         bool diagnostics, const CallContext& call) override;
  absl::StatusOr<KeepIndices> Evict(const EvictInputs& in, const EvictParams& p, const CallContext& call) override;
  absl::StatusOr<MaskResult> PredictMaskFromRepresentatives(const RepresentativeInputs& in, const MaskParams& p,
                                                            bool diagnostics, const CallContext& call) override;
  absl::StatusOr<HeadGraph> Graph(const CoarseBlocks& q, const CoarseBlocks& k, int b, int h,
                                  Coarsening query_coarsening, const GraphParams& p) override;
  void ReleaseSession(uint64_t session) override { placement_.Release(session); }

 private:

  // PredictMask on validated operands (rows checked): placed, batched with same-key requests, run.
  absl::StatusOr<MaskResult> PredictOnDevice(const HostOperands& ops, const MaskParams& p, const CallContext& call);
  // Runs a group of same-key requests (all placed on `device`) as one launch and splits the mask.
  void RunBatch(int device, const std::vector<BatchItem*>& items);

  std::vector<std::unique_ptr<Worker>> workers_;
  // Which worker runs a call: a session's calls stay on one (device_placement.h). A call holds its
  // lease (counted in flight there) from placement to its answer, batching wait included.
  DevicePlacement placement_;
  std::unique_ptr<Backend> cpu_;
  PredictBatcher batcher_;
};

// What must agree for two requests to share one launch: head shape and every parameter.
// Requests share a launch only on the worker they were placed on, so the worker is part of the key.
std::string BatchKey(int worker, const HostOperands& o, const MaskParams& p, bool bf16_exact) {
  struct Key {
    int worker, q_heads, kv_heads, blocks, dim, estimator, query_coarsening, row_begin, row_end, bf16_exact;
    float importance_ratio;
    DeviceMaskParams device;
  } key{};
  // Compared as bytes: every field is 4 bytes wide, so there is no padding to hold garbage.
  static_assert(sizeof(Key) == 11 * 4 + sizeof(DeviceMaskParams) && sizeof(DeviceMaskParams) % 4 == 0);
  key.worker = worker;
  key.q_heads = o.q_heads;
  key.kv_heads = o.kv_heads;
  key.blocks = o.blocks;
  key.dim = o.dim;
  key.estimator = static_cast<int>(p.graph.estimator);
  key.query_coarsening = static_cast<int>(p.query_coarsening);
  key.row_begin = p.row_begin;
  key.row_end = p.row_end;
  key.bf16_exact = bf16_exact;
  key.importance_ratio = p.importance_ratio;
  key.device = DeviceMaskParams::From(p);
  return std::string(reinterpret_cast<const char*>(&key), sizeof(key));
}

absl::StatusOr<MaskResult> CudaBackend::PredictMask(const CoarseBlocks& q, const CoarseBlocks& k, const MaskParams& p,
                                                    bool diagnostics, const CallContext& call) {
  if (auto s = cpu::CheckPolicyRange(p); !s.ok()) return s;
  if (auto s = p.Validate(); !s.ok()) return s;
  if (auto s = cpu::CheckCoarsePair(q, k); !s.ok()) return s;
  // Positions-only policies and diagnostics (curvature statistics over every edge) go to the CPU.
  if (cpu::NeedOf(p.policy) == cpu::GraphNeed::kNone || diagnostics) return cpu_->PredictMask(q, k, p, diagnostics);
  if (auto s = cpu::CheckRows(p, q.blocks); !s.ok()) return s;
  const Estimator estimator = cpu::SelectionGraphParams(p).estimator;  // quest scores by its bounds
  return PredictOnDevice(HostOperands::FromCoarse(q, k, p.query_coarsening, estimator), p, call);
}

absl::StatusOr<MaskResult> CudaBackend::PredictMaskFromRepresentatives(const RepresentativeInputs& in,
                                                                       const MaskParams& p, bool diagnostics,
                                                                       const CallContext& call) {
  // Read straight from the request: fp32 or bf16 representatives of a device-run policy with a dot
  // estimator. Anything else (Quest's bounds, fp16, CPU-run policies, diagnostics) takes the
  // default path through a host coarse state, as do all error messages of those cases.
  auto direct_dtype = [](DType d) { return d == DType::kF32 || d == DType::kBF16; };
  const bool direct = in.kmin == nullptr && in.kmax == nullptr && !diagnostics && cpu::CheckPolicyRange(p).ok() &&
                      cpu::NeedOf(p.policy) != cpu::GraphNeed::kNone &&
                      cpu::SelectionGraphParams(p).estimator != Estimator::kQuest && direct_dtype(in.q.dtype) &&
                      direct_dtype(in.k.dtype);
  if (!direct) return Backend::PredictMaskFromRepresentatives(in, p, diagnostics, call);
  const auto start = std::chrono::steady_clock::now();
  // The default path's checks in its order: each side's representatives, the parameters, the pair.
  if (auto s = CheckRepresentatives(in.q, nullptr, nullptr, in.block_size, in.tokens); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("q_rep: ", s.message()));
  }
  if (auto s = CheckRepresentatives(in.k, nullptr, nullptr, in.block_size, in.tokens); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("k_rep: ", s.message()));
  }
  if (auto s = p.Validate(); !s.ok()) return s;
  auto shape_of = [&](const TensorView& t) {
    return cpu::CoarseShape{static_cast<int>(t.shape[0]), static_cast<int>(t.shape[1]), static_cast<int>(t.shape[2]),
                            static_cast<int>(t.shape[3]), in.block_size};
  };
  if (auto s = cpu::CheckCoarseShapes(shape_of(in.q), shape_of(in.k)); !s.ok()) return s;
  const HostOperands ops = HostOperands::FromRepresentatives(in.q, in.k);
  if (auto s = cpu::CheckRows(p, ops.blocks); !s.ok()) return s;
  const double coarsen = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  auto r = PredictOnDevice(ops, p, call);
  if (r.ok()) r->coarsen_seconds = coarsen;
  return r;
}

absl::StatusOr<MaskResult> CudaBackend::PredictOnDevice(const HostOperands& ops, const MaskParams& p,
                                                        const CallContext& call) {
  BatchItem item;
  item.ops = ops;
  item.p = &p;
  item.bf16_exact = OperandsBf16(ops);
  item.cost = static_cast<int64_t>(ops.batch) * ops.q_heads * ops.blocks * ops.blocks * static_cast<int64_t>(sizeof(float));
  const DevicePlacement::Lease lease = placement_.Acquire(call.session);
  const int device = lease.device();
  // The group's leader runs it with its own callback; every member has this device (it is in the key).
  batcher_.Submit(BatchKey(device, ops, p, item.bf16_exact), &item,
                  [this, device](const std::vector<BatchItem*>& items) { RunBatch(device, items); });
  return std::move(item.result);
}

void CudaBackend::RunBatch(int device, const std::vector<BatchItem*>& items) {
  auto fail = [&](const absl::Status& s) {
    for (BatchItem* it : items) it->result = s;
  };
  const BatchItem& first = *items.front();
  const MaskParams& p = *first.p;
  const int m = first.ops.blocks;
  const int row_end = p.row_end < 0 ? m : p.row_end;
  Worker& w = *workers_[device];
  if (auto s = CudaStatus(cudaSetDevice(w.predictor->device()), "cudaSetDevice"); !s.ok()) return fail(s);
  std::vector<UploadPart> parts;
  for (const BatchItem* it : items) parts.push_back({&it->ops, 0, it->ops.batch, 0, it->ops.q_heads});
  // Upload under upload_mu, kernels and download under compute_mu: the next batch's upload overlaps
  // this one's kernels (worker.h). CAB_CUDA_OVERLAP=0 keeps upload_mu to the end instead (one batch
  // at a time, whole), for benchmarks comparing the two.
  static const bool overlap = [] {
    const char* e = std::getenv("CAB_CUDA_OVERLAP");
    return e == nullptr || std::string(e) != "0";
  }();
  auto lease = w.AcquireSlot();
  InputSlot& slot = lease->slot();
  std::unique_lock<std::mutex> upload(w.upload_mu);
  auto in = UploadOperands(slot, w.copy_stream, parts, first.bf16_exact, w.predictor->Bf16Scores(first.bf16_exact));
  if (overlap) upload.unlock();
  if (!in.ok()) return fail(in.status());
  std::unique_lock<std::mutex> lock(w.compute_mu);
  const cudaStream_t stream = w.predictor->stream();
  if (auto s = CudaStatus(cudaStreamWaitEvent(stream, slot.uploaded, 0), "cudaStreamWaitEvent"); !s.ok()) return fail(s);
  const absl::Status enqueued = w.predictor->Enqueue(*in, p, p.row_begin, row_end, false);
  cudaEventRecord(slot.consumed, stream);  // also after a partial enqueue: the slot's next lease waits for it
  lease.reset();  // the next upload into this slot may start (it waits for `consumed`)
  if (!enqueued.ok()) return fail(enqueued);
  BlockMask all;
  if (auto s = w.predictor->DownloadMask(&all); !s.ok()) return fail(s);
  auto ms = w.predictor->StageMs();
  if (!ms.ok()) return fail(ms.status());
  lock.unlock();
  if (upload.owns_lock()) upload.unlock();
  // Split the stacked mask: request i owns the rows of its batch * heads heads, in stacking order.
  const int64_t rows_per_head = all.rows;
  int64_t row0 = 0;
  for (BatchItem* it : items) {
    MaskResult r;
    r.mask.cols = all.cols;
    r.mask.row_begin = all.row_begin;
    r.mask.rows = all.rows;
    r.mask.batch = it->ops.batch;
    r.mask.heads = it->ops.q_heads;
    const int64_t nrows = static_cast<int64_t>(it->ops.batch) * it->ops.q_heads * rows_per_head;
    if (items.size() == 1) {  // the whole mask: moved, not copied (13 MiB of columns at 128k)
      r.mask.row_offsets = std::move(all.row_offsets);
      r.mask.col_indices = std::move(all.col_indices);
    } else {
      const int64_t base = all.row_offsets[row0];
      r.mask.row_offsets.resize(nrows + 1);
      for (int64_t i = 0; i <= nrows; ++i) r.mask.row_offsets[i] = all.row_offsets[row0 + i] - base;
      r.mask.col_indices.assign(all.col_indices.begin() + base, all.col_indices.begin() + all.row_offsets[row0 + nrows]);
    }
    row0 += nrows;
    r.graph_seconds = ((*ms)[kScores] + (*ms)[kTopLists] + (*ms)[kGraph]) * 1e-3;
    r.select_seconds = (*ms)[kSelect] * 1e-3;
    r.device = device;
    it->result = std::move(r);
  }
}

absl::StatusOr<KeepIndices> CudaBackend::Evict(const EvictInputs& in, const EvictParams& p, const CallContext& call) {
  auto shape = cpu::ResolveEvictShape(in, p);
  if (!shape.ok()) return shape.status();
  // random is defined by the CPU's seeded stream (one draw per kept token): it stays there.
  if (p.policy == EvictPolicy::kRandom) return cpu_->Evict(in, p);
  bool non_finite = false;
  absl::StatusOr<KeepIndices> out;
  {
    const DevicePlacement::Lease lease = placement_.Acquire(call.session);
    Worker& w = *workers_[lease.device()];
    std::scoped_lock lock(w.upload_mu, w.compute_mu);
    out = EvictOnDevice(*w.predictor, w.evict, in, p, *shape, &non_finite);
  }
  if (non_finite) return cpu_->Evict(in, p);  // the CPU's coarsening names the offending element
  return out;
}

absl::StatusOr<HeadGraph> CudaBackend::Graph(const CoarseBlocks& q, const CoarseBlocks& k, int b, int h,
                                             Coarsening query_coarsening, const GraphParams& p) {
  if (auto s = p.Validate(); !s.ok()) return s;
  if (auto s = cpu::CheckCoarsePair(q, k); !s.ok()) return s;
  if (b < 0 || b >= q.batch) return absl::InvalidArgumentError(absl::StrCat("batch index: ", b, " is outside [0, ", q.batch, ")"));
  if (h < 0 || h >= q.heads) return absl::InvalidArgumentError(absl::StrCat("head: ", h, " is outside [0, ", q.heads, ")"));
  const DevicePlacement::Lease lease = placement_.Acquire(0);  // a diagnostic call: no session
  Worker& w = *workers_[lease.device()];
  const auto slot_lease = w.AcquireSlot();  // before the locks (worker.h)
  InputSlot& slot = slot_lease->slot();
  std::scoped_lock lock(w.upload_mu, w.compute_mu);
  CAB_CUDA_RETURN(cudaSetDevice(w.predictor->device()));
  // One query head against its kv head (h / g): a batch of one, one head each.
  const HostOperands ops = HostOperands::FromCoarse(q, k, query_coarsening, p.estimator);
  const bool bf16 = OperandsBf16(ops);
  auto in = UploadOperands(slot, w.copy_stream, {{&ops, b, 1, h, 1}}, bf16, w.predictor->Bf16Scores(bf16));
  if (!in.ok()) return in.status();
  CAB_CUDA_RETURN(cudaStreamWaitEvent(w.predictor->stream(), slot.uploaded, 0));
  MaskParams mp;
  mp.graph = p;
  mp.query_coarsening = query_coarsening;
  const absl::Status enqueued = w.predictor->Enqueue(*in, mp, 0, q.blocks, true);
  cudaEventRecord(slot.consumed, w.predictor->stream());
  CAB_RETURN_IF_ERROR(enqueued);
  auto dump = w.predictor->DumpHead(mp);
  if (!dump.ok()) return dump.status();
  const int M = q.blocks, W = (M + 31) / 32;
  HeadGraph out;
  out.blocks = M;
  out.score.assign(static_cast<size_t>(M) * M, -std::numeric_limits<float>::infinity());
  out.affinity.assign(static_cast<size_t>(M) * M, 0.f);
  out.adjacency.assign(static_cast<size_t>(M) * M, 0);
  out.degree = dump->degree;
  out.curvature = dump->curvature;
  for (int i = 0; i < M; ++i) {
    const int end = p.causal ? i + 1 : M;
    for (int j = 0; j < end; ++j) {
      const size_t at = static_cast<size_t>(i) * M + j;
      out.score[at] = dump->scores[at];
      out.affinity[at] = std::exp(dump->scores[at] - dump->row_max[i]) * dump->row_inv[i];
    }
    for (int j = 0; j < M; ++j) {
      out.adjacency[static_cast<size_t>(i) * M + j] = (dump->adj[static_cast<size_t>(i) * W + j / 32] >> (j % 32)) & 1u;
    }
  }
  return out;
}

absl::StatusOr<CoarseBlocks> CudaBackend::Coarsen(const TensorView& x, int block_size, const CallContext& call) {
  if (auto s = CheckTensor4(x, "x"); !s.ok()) return s;
  if (block_size < 1) return absl::InvalidArgumentError(absl::StrCat("block_size: ", block_size, " must be >= 1"));
  CoarsenArgs a;
  a.dtype = x.dtype;
  a.batch = static_cast<int>(x.shape[0]);
  a.heads = static_cast<int>(x.shape[1]);
  a.tokens = x.shape[2];
  a.dim = static_cast<int>(x.shape[3]);
  a.block_size = block_size;
  const int M = a.blocks();
  const size_t rows = static_cast<size_t>(a.batch) * a.heads * M, elems = rows * a.dim;

  const DevicePlacement::Lease lease = placement_.Acquire(call.session);
  Worker& w = *workers_[lease.device()];
  std::scoped_lock lock(w.upload_mu, w.compute_mu);
  CAB_CUDA_RETURN(cudaSetDevice(w.predictor->device()));
  const cudaStream_t stream = w.predictor->stream();
  CAB_RETURN_IF_ERROR(w.x.Reserve(x.nbytes()));
  CAB_RETURN_IF_ERROR(w.c_maxl2.Reserve(elems * 4));
  CAB_RETURN_IF_ERROR(w.c_mean.Reserve(elems * 4));
  CAB_RETURN_IF_ERROR(w.c_kmin.Reserve(elems * 4));
  CAB_RETURN_IF_ERROR(w.c_kmax.Reserve(elems * 4));
  CAB_RETURN_IF_ERROR(w.c_norm.Reserve(rows * 4));
  CAB_RETURN_IF_ERROR(w.c_count.Reserve(rows * 4));
  CAB_CUDA_RETURN(cudaMemcpyAsync(w.x.as<void>(), x.data, x.nbytes(), cudaMemcpyHostToDevice, stream));
  a.x = w.x.as<void>();
  a.maxl2 = w.c_maxl2.as<float>();
  a.mean = w.c_mean.as<float>();
  a.kmin = w.c_kmin.as<float>();
  a.kmax = w.c_kmax.as<float>();
  a.best_norm2 = w.c_norm.as<float>();
  a.count = w.c_count.as<int32_t>();
  CAB_RETURN_IF_ERROR(LaunchCoarsen(a, stream));
  CoarseBlocks c;
  c.batch = a.batch;
  c.heads = a.heads;
  c.blocks = M;
  c.dim = a.dim;
  c.block_size = block_size;
  c.tokens = a.tokens;
  c.maxl2.resize(elems);
  c.mean.resize(elems);
  c.kmin.resize(elems);
  c.kmax.resize(elems);
  c.best_norm2.resize(rows);
  c.count.resize(rows);
  CAB_CUDA_RETURN(cudaMemcpyAsync(c.maxl2.data(), a.maxl2, elems * 4, cudaMemcpyDeviceToHost, stream));
  CAB_CUDA_RETURN(cudaMemcpyAsync(c.mean.data(), a.mean, elems * 4, cudaMemcpyDeviceToHost, stream));
  CAB_CUDA_RETURN(cudaMemcpyAsync(c.kmin.data(), a.kmin, elems * 4, cudaMemcpyDeviceToHost, stream));
  CAB_CUDA_RETURN(cudaMemcpyAsync(c.kmax.data(), a.kmax, elems * 4, cudaMemcpyDeviceToHost, stream));
  CAB_CUDA_RETURN(cudaMemcpyAsync(c.best_norm2.data(), a.best_norm2, rows * 4, cudaMemcpyDeviceToHost, stream));
  CAB_CUDA_RETURN(cudaMemcpyAsync(c.count.data(), a.count, rows * 4, cudaMemcpyDeviceToHost, stream));
  CAB_CUDA_RETURN(cudaStreamSynchronize(stream));
  // A non-finite input shows in the mean (NaN propagates through the sum; fminf / fmaxf skip it) or
  // in min / max (infinities); the CPU path then names the offending element.
  for (size_t i = 0; i < elems; ++i) {
    if (!std::isfinite(c.mean[i]) || !std::isfinite(c.kmin[i]) || !std::isfinite(c.kmax[i])) {
      return CoarsenCpu(x, block_size);
    }
  }
  return c;
}

}  // namespace

absl::StatusOr<CudaBackendOptions> ParseCudaBackendOptions(const std::string& options) {
  CudaBackendOptions o;
  for (absl::string_view item : absl::StrSplit(options, ';', absl::SkipWhitespace())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    if (kv.first == "devices") {
      for (absl::string_view d : absl::StrSplit(kv.second, ',', absl::SkipWhitespace())) {
        int id;
        if (!absl::SimpleAtoi(d, &id) || id < 0) {
          return absl::InvalidArgumentError(absl::StrCat("devices: '", d, "' is not a device index"));
        }
        o.devices.push_back(id);
      }
    } else if (kv.first == "gemm") {
      if (kv.second == "auto") o.gemm = GemmPolicy::kAuto;
      else if (kv.second == "fp32") o.gemm = GemmPolicy::kFp32;
      else if (kv.second == "tf32") o.gemm = GemmPolicy::kTf32;
      else if (kv.second == "bf16") o.gemm = GemmPolicy::kBf16;
      else return absl::InvalidArgumentError(absl::StrCat("gemm: '", kv.second, "' (auto, fp32, tf32, bf16)"));
    } else if (kv.first == "cpu_threads") {
      if (!absl::SimpleAtoi(kv.second, &o.cpu_threads) || o.cpu_threads < 0) {
        return absl::InvalidArgumentError(absl::StrCat("cpu_threads: '", kv.second, "' is not a count"));
      }
    } else if (kv.first == "max_batch") {
      if (!absl::SimpleAtoi(kv.second, &o.max_batch) || o.max_batch < 1) {
        return absl::InvalidArgumentError(absl::StrCat("max_batch: '", kv.second, "' must be a count >= 1"));
      }
    } else if (kv.first == "max_queue_delay_us") {
      if (!absl::SimpleAtoi(kv.second, &o.max_queue_delay_us) || o.max_queue_delay_us < 0) {
        return absl::InvalidArgumentError(absl::StrCat("max_queue_delay_us: '", kv.second, "' must be >= 0"));
      }
    }
    // Other keys are accepted and ignored (options meant for other backends).
  }
  return o;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const CudaBackendOptions& options) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    return absl::UnavailableError(absl::StrCat("no CUDA device found (",
                                               e == cudaSuccess ? "0 devices" : cudaGetErrorString(e), ")"));
  }
  std::vector<int> devices = options.devices;
  if (devices.empty()) {
    for (int d = 0; d < count; ++d) devices.push_back(d);
  }
  std::vector<std::unique_ptr<Worker>> workers;
  for (int d : devices) {
    if (d >= count) {
      return absl::InvalidArgumentError(absl::StrCat("devices: ", d, " is not a visible device (", count, " visible)"));
    }
    auto w = Worker::Create(d, options.gemm);
    if (!w.ok()) return w.status();
    workers.push_back(std::move(*w));
  }
  return std::unique_ptr<Backend>(new CudaBackend(std::move(workers), options));
}

}  // namespace cab::cuda
