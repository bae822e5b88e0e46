#include "cuda_backend.h"

#include <chrono>
#include <cmath>
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
#include "predict_batcher.h"
#include "evict_inputs.h"           // kernels/cpu: ResolveEvictShape, shared validation
#include "select.h"                 // kernels/cpu: NeedOf

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

struct Worker {
  std::unique_ptr<DevicePredictor> predictor;
  std::mutex mu;               // one request at a time on this device's stream
  DeviceBuffer q, k, kmin, kmax, x;
  DeviceBuffer c_maxl2, c_mean, c_kmin, c_kmax, c_norm, c_count;
  PinnedBuffer staging;
  EvictWorkspace evict;
  std::string name;
};

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

  // One request's share of an upload: batches [b0, b0 + nb) and query heads [h0, h0 + nh).
  struct UploadPart {
    const HostOperands* ops;
    int b0, nb, h0, nh;
  };
  // Copies the parts' query operand and the matching kv heads' key operand (Quest: bounds) to the
  // device, stacked along the batch (every part has the same heads, blocks and dim).
  absl::StatusOr<PredictorInputs> Upload(Worker& w, const std::vector<UploadPart>& parts, bool bf16_exact);
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

absl::StatusOr<PredictorInputs> CudaBackend::Upload(Worker& w, const std::vector<UploadPart>& parts,
                                                    bool bf16_exact) {
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
  const bool as_bf16 = !quest && bf16_exact && w.predictor->Bf16Scores(true);
  const size_t total = nq + (quest ? 2 : 1) * nk;
  CAB_RETURN_IF_ERROR(w.staging.Reserve(total * sizeof(float)));
  float* stage = w.staging.as<float>();
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
              const uint32_t u = static_cast<uint32_t>(h) << 16;
              std::memcpy(dst + i, &u, 4);
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
  const cudaStream_t stream = w.predictor->stream();
  PredictorInputs in;
  in.batch = nb;
  in.q_heads = nh;
  in.kv_heads = nkv;
  in.blocks = o0.blocks;
  in.dim = o0.dim;
  if (as_bf16) {
    uint16_t* stage16 = w.staging.as<uint16_t>();
    gather(kQuery, stage16);
    gather(kKey, stage16 + nq);
    CAB_RETURN_IF_ERROR(w.q.Reserve(nq * 2));
    CAB_RETURN_IF_ERROR(w.k.Reserve(nk * 2));
    CAB_CUDA_RETURN(cudaMemcpyAsync(w.q.as<void>(), stage16, nq * 2, cudaMemcpyHostToDevice, stream));
    CAB_CUDA_RETURN(cudaMemcpyAsync(w.k.as<void>(), stage16 + nq, nk * 2, cudaMemcpyHostToDevice, stream));
    in.bf16_exact = true;
    in.q_rep_bf16 = w.q.as<__nv_bfloat16>();
    in.k_feature_bf16 = w.k.as<__nv_bfloat16>();
    return in;
  }
  gather(kQuery, stage);
  CAB_RETURN_IF_ERROR(w.q.Reserve(nq * sizeof(float)));
  CAB_CUDA_RETURN(cudaMemcpyAsync(w.q.as<float>(), stage, nq * sizeof(float), cudaMemcpyHostToDevice, stream));
  in.q_rep = w.q.as<float>();
  if (quest) {
    gather(kMin, stage + nq);
    gather(kMax, stage + nq + nk);
    CAB_RETURN_IF_ERROR(w.kmin.Reserve(nk * sizeof(float)));
    CAB_RETURN_IF_ERROR(w.kmax.Reserve(nk * sizeof(float)));
    CAB_CUDA_RETURN(cudaMemcpyAsync(w.kmin.as<float>(), stage + nq, nk * sizeof(float), cudaMemcpyHostToDevice, stream));
    CAB_CUDA_RETURN(cudaMemcpyAsync(w.kmax.as<float>(), stage + nq + nk, nk * sizeof(float), cudaMemcpyHostToDevice,
                                    stream));
    in.kmin = w.kmin.as<float>();
    in.kmax = w.kmax.as<float>();
  } else {
    gather(kKey, stage + nq);
    CAB_RETURN_IF_ERROR(w.k.Reserve(nk * sizeof(float)));
    CAB_CUDA_RETURN(cudaMemcpyAsync(w.k.as<float>(), stage + nq, nk * sizeof(float), cudaMemcpyHostToDevice, stream));
    in.k_feature = w.k.as<float>();
    in.bf16_exact = bf16_exact;
  }
  return in;
}

// True when the operands the scores GEMM reads are all exactly bf16 values (see AllBf16); bf16
// bits are by definition. Quest's bound kernel reads fp32.
bool OperandsBf16(const HostOperands& o) {
  if (o.kmin != nullptr) return false;
  return (o.q_bf16 != nullptr || AllBf16(o.q, o.q_elems())) && (o.k_bf16 != nullptr || AllBf16(o.k, o.k_elems()));
}

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

// Rows the request asks for must exist (the same messages as the CPU backend).
absl::Status CheckRows(const MaskParams& p, int m) {
  if (p.row_begin >= m) {
    return absl::InvalidArgumentError(absl::StrCat("row_begin: ", p.row_begin, " must be < the number of blocks (", m, ")"));
  }
  if (p.row_end > m) {
    return absl::InvalidArgumentError(absl::StrCat("row_end: ", p.row_end, " exceeds the number of blocks (", m, ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckPolicyRange(const MaskParams& p) {
  if (static_cast<int>(p.policy) < 0 || static_cast<int>(p.policy) > static_cast<int>(MaskPolicy::kAdaptive)) {
    return absl::InvalidArgumentError(absl::StrCat("policy: unknown mask policy ", static_cast<int>(p.policy)));
  }
  return absl::OkStatus();
}

Estimator ScoreEstimator(const MaskParams& p) {
  return p.policy == MaskPolicy::kQuest ? Estimator::kQuest : p.graph.estimator;
}

absl::StatusOr<MaskResult> CudaBackend::PredictMask(const CoarseBlocks& q, const CoarseBlocks& k, const MaskParams& p,
                                                    bool diagnostics, const CallContext& call) {
  if (auto s = CheckPolicyRange(p); !s.ok()) return s;
  if (auto s = p.Validate(); !s.ok()) return s;
  if (auto s = cpu::CheckCoarsePair(q, k); !s.ok()) return s;
  // Positions-only policies and diagnostics (curvature statistics over every edge) go to the CPU.
  if (cpu::NeedOf(p.policy) == cpu::GraphNeed::kNone || diagnostics) return cpu_->PredictMask(q, k, p, diagnostics);
  if (auto s = CheckRows(p, q.blocks); !s.ok()) return s;
  return PredictOnDevice(HostOperands::FromCoarse(q, k, p.query_coarsening, ScoreEstimator(p)), p, call);
}

absl::StatusOr<MaskResult> CudaBackend::PredictMaskFromRepresentatives(const RepresentativeInputs& in,
                                                                       const MaskParams& p, bool diagnostics,
                                                                       const CallContext& call) {
  // Read straight from the request: fp32 or bf16 representatives of a device-run policy with a dot
  // estimator. Anything else (Quest's bounds, fp16, CPU-run policies, diagnostics) takes the
  // default path through a host coarse state, as do all error messages of those cases.
  auto direct_dtype = [](DType d) { return d == DType::kF32 || d == DType::kBF16; };
  const bool direct = in.kmin == nullptr && in.kmax == nullptr && !diagnostics && CheckPolicyRange(p).ok() &&
                      cpu::NeedOf(p.policy) != cpu::GraphNeed::kNone && ScoreEstimator(p) != Estimator::kQuest &&
                      direct_dtype(in.q.dtype) && direct_dtype(in.k.dtype);
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
  if (auto s = CheckRows(p, ops.blocks); !s.ok()) return s;
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
  std::lock_guard<std::mutex> lock(w.mu);
  if (auto s = CudaStatus(cudaSetDevice(w.predictor->device()), "cudaSetDevice"); !s.ok()) return fail(s);
  std::vector<UploadPart> parts;
  for (const BatchItem* it : items) parts.push_back({&it->ops, 0, it->ops.batch, 0, it->ops.q_heads});
  auto in = Upload(w, parts, first.bf16_exact);
  if (!in.ok()) return fail(in.status());
  if (auto s = w.predictor->Enqueue(*in, p, p.row_begin, row_end, false); !s.ok()) return fail(s);
  BlockMask all;
  if (auto s = w.predictor->DownloadMask(&all); !s.ok()) return fail(s);
  auto ms = w.predictor->StageMs();
  if (!ms.ok()) return fail(ms.status());
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
    std::lock_guard<std::mutex> lock(w.mu);
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
  std::lock_guard<std::mutex> lock(w.mu);
  CAB_CUDA_RETURN(cudaSetDevice(w.predictor->device()));
  // One query head against its kv head (h / g): a batch of one, one head each.
  const HostOperands ops = HostOperands::FromCoarse(q, k, query_coarsening, p.estimator);
  auto in = Upload(w, {{&ops, b, 1, h, 1}}, OperandsBf16(ops));
  if (!in.ok()) return in.status();
  MaskParams mp;
  mp.graph = p;
  mp.query_coarsening = query_coarsening;
  CAB_RETURN_IF_ERROR(w.predictor->Enqueue(*in, mp, 0, q.blocks, true));
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
  std::lock_guard<std::mutex> lock(w.mu);
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
    auto w = std::make_unique<Worker>();
    auto pred = DevicePredictor::Create(d, options.gemm);
    if (!pred.ok()) return pred.status();
    w->predictor = std::move(*pred);
    cudaDeviceProp prop;
    CAB_CUDA_RETURN(cudaGetDeviceProperties(&prop, d));
    w->name = absl::StrCat("cuda:", d, " (", prop.name, ")");
    workers.push_back(std::move(w));
  }
  return std::unique_ptr<Backend>(new CudaBackend(std::move(workers), options));
}

}  // namespace cab::cuda
