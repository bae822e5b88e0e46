#include "cuda_backend.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "coarsen_check.h"          // kernels/cpu: the CPU backend's validation, shared
#include "coarsen_kernel.h"
#include "cpu_backend_predict.h"    // kernels/cpu: CheckCoarsePair
#include "cuda_status.h"
#include "device_evictor.h"
#include "evict_inputs.h"           // kernels/cpu: ResolveEvictShape, shared validation
#include "select.h"                 // kernels/cpu: NeedOf

namespace cab::cuda {
namespace {

// True when every value is exactly a bf16 value (its low 16 bits are zero): then a bf16 GEMM with
// fp32 accumulation computes the same products as fp32.
bool AllBf16(const float* v, size_t n) {
  uint32_t acc = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, v + i, 4);
    acc |= u & 0xffffu;
  }
  return acc == 0;
}

struct Worker {
  std::unique_ptr<DevicePredictor> predictor;
  std::mutex mu;               // one request at a time on this device's stream
  std::atomic<int> load{0};    // requests waiting or running here
  DeviceBuffer q, k, kmin, kmax, x;
  DeviceBuffer c_maxl2, c_mean, c_kmin, c_kmax, c_norm, c_count;
  PinnedBuffer staging;
  EvictWorkspace evict;
  std::string name;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(std::vector<std::unique_ptr<Worker>> workers, int cpu_threads)
      : workers_(std::move(workers)), cpu_(MakeCpuBackend({cpu_threads})) {}

  std::string Name() const override { return "cuda"; }
  std::vector<std::string> Devices() const override {
    std::vector<std::string> out;
    for (const auto& w : workers_) out.push_back(w->name);
    return out;
  }

  absl::StatusOr<CoarseBlocks> Coarsen(const TensorView& x, int block_size) override;
  absl::StatusOr<HeadGraph> Graph(const CoarseBlocks& q, const CoarseBlocks& k, int b, int h,
                                  Coarsening query_coarsening, const GraphParams& p) override;
  absl::StatusOr<MaskResult> PredictMask(const CoarseBlocks& q, const CoarseBlocks& k, const MaskParams& p,
                                         bool diagnostics) override;
  absl::StatusOr<KeepIndices> Evict(const EvictInputs& in, const EvictParams& p) override;

 private:
  // The least loaded device; the caller holds its lock for the duration of the request.
  Worker& Pick() {
    Worker* best = workers_.front().get();
    for (auto& w : workers_) {
      if (w->load.load() < best->load.load()) best = w.get();
    }
    return *best;
  }

  // Copies the head range [h0, h0 + nh) of `q`'s coarsening and the matching kv heads of `k` to the device.
  absl::StatusOr<PredictorInputs> Upload(Worker& w, const CoarseBlocks& q, const CoarseBlocks& k, Coarsening qc,
                                         Estimator estimator, int b0, int nb, int h0, int nh);

  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<Backend> cpu_;
};

class LoadGuard {
 public:
  explicit LoadGuard(Worker& w) : w_(w), lock_(w.mu) {}
  ~LoadGuard() { w_.load.fetch_sub(1); }
 private:
  Worker& w_;
  std::unique_lock<std::mutex> lock_;
};

absl::StatusOr<PredictorInputs> CudaBackend::Upload(Worker& w, const CoarseBlocks& q, const CoarseBlocks& k,
                                                    Coarsening qc, Estimator estimator, int b0, int nb, int h0,
                                                    int nh) {
  const int g = q.heads / k.heads;
  const int kv0 = h0 / g, nkv = (nh + g - 1) / g;
  const size_t row = static_cast<size_t>(q.blocks) * q.dim;  // floats per head
  const size_t nq = static_cast<size_t>(nb) * nh * row, nk = static_cast<size_t>(nb) * nkv * row;
  const bool quest = estimator == Estimator::kQuest;
  const size_t total = nq + (quest ? 2 : 1) * nk;
  CAB_RETURN_IF_ERROR(w.staging.Reserve(total * sizeof(float)));
  float* stage = w.staging.as<float>();
  const std::vector<float>& qsrc = qc == Coarsening::kMaxL2 ? q.maxl2 : q.mean;
  const std::vector<float>& ksrc = estimator == Estimator::kMean ? k.mean : k.maxl2;
  auto gather = [&](const std::vector<float>& src, int heads, int first, int count, float* dst) {
    for (int b = 0; b < nb; ++b) {
      const float* from = src.data() + (static_cast<size_t>(b0 + b) * heads + first) * row;
      std::memcpy(dst + static_cast<size_t>(b) * count * row, from, static_cast<size_t>(count) * row * sizeof(float));
    }
  };
  gather(qsrc, q.heads, h0, nh, stage);
  PredictorInputs in;
  in.batch = nb;
  in.q_heads = nh;
  in.kv_heads = nkv;
  in.blocks = q.blocks;
  in.dim = q.dim;
  CAB_RETURN_IF_ERROR(w.q.Reserve(nq * sizeof(float)));
  CAB_CUDA_RETURN(cudaMemcpyAsync(w.q.as<float>(), stage, nq * sizeof(float), cudaMemcpyHostToDevice,
                                  w.predictor->stream()));
  in.q_rep = w.q.as<float>();
  if (quest) {
    gather(k.kmin, k.heads, kv0, nkv, stage + nq);
    gather(k.kmax, k.heads, kv0, nkv, stage + nq + nk);
    CAB_RETURN_IF_ERROR(w.kmin.Reserve(nk * sizeof(float)));
    CAB_RETURN_IF_ERROR(w.kmax.Reserve(nk * sizeof(float)));
    CAB_CUDA_RETURN(cudaMemcpyAsync(w.kmin.as<float>(), stage + nq, nk * sizeof(float), cudaMemcpyHostToDevice,
                                    w.predictor->stream()));
    CAB_CUDA_RETURN(cudaMemcpyAsync(w.kmax.as<float>(), stage + nq + nk, nk * sizeof(float), cudaMemcpyHostToDevice,
                                    w.predictor->stream()));
    in.kmin = w.kmin.as<float>();
    in.kmax = w.kmax.as<float>();
  } else {
    gather(ksrc, k.heads, kv0, nkv, stage + nq);
    CAB_RETURN_IF_ERROR(w.k.Reserve(nk * sizeof(float)));
    CAB_CUDA_RETURN(cudaMemcpyAsync(w.k.as<float>(), stage + nq, nk * sizeof(float), cudaMemcpyHostToDevice,
                                    w.predictor->stream()));
    in.k_feature = w.k.as<float>();
    in.bf16_exact = AllBf16(stage, nq + nk);
  }
  return in;
}

absl::StatusOr<MaskResult> CudaBackend::PredictMask(const CoarseBlocks& q, const CoarseBlocks& k, const MaskParams& p,
                                                    bool diagnostics) {
  if (static_cast<int>(p.policy) < 0 || static_cast<int>(p.policy) > static_cast<int>(MaskPolicy::kAdaptive)) {
    return absl::InvalidArgumentError(absl::StrCat("policy: unknown mask policy ", static_cast<int>(p.policy)));
  }
  if (auto s = p.Validate(); !s.ok()) return s;
  if (auto s = cpu::CheckCoarsePair(q, k); !s.ok()) return s;
  // Positions-only policies and diagnostics (curvature statistics over every edge) go to the CPU.
  if (cpu::NeedOf(p.policy) == cpu::GraphNeed::kNone || diagnostics) return cpu_->PredictMask(q, k, p, diagnostics);
  const int m = q.blocks;
  if (p.row_begin >= m) {
    return absl::InvalidArgumentError(absl::StrCat("row_begin: ", p.row_begin, " must be < the number of blocks (", m, ")"));
  }
  if (p.row_end > m) {
    return absl::InvalidArgumentError(absl::StrCat("row_end: ", p.row_end, " exceeds the number of blocks (", m, ")"));
  }
  const int row_end = p.row_end < 0 ? m : p.row_end;

  Worker& w = Pick();
  w.load.fetch_add(1);
  LoadGuard guard(w);
  CAB_CUDA_RETURN(cudaSetDevice(w.predictor->device()));
  const Estimator estimator = p.policy == MaskPolicy::kQuest ? Estimator::kQuest : p.graph.estimator;
  auto in = Upload(w, q, k, p.query_coarsening, estimator, 0, q.batch, 0, q.heads);
  if (!in.ok()) return in.status();
  CAB_RETURN_IF_ERROR(w.predictor->Enqueue(*in, p, p.row_begin, row_end, false));
  MaskResult result;
  CAB_RETURN_IF_ERROR(w.predictor->DownloadMask(&result.mask));
  result.mask.batch = q.batch;
  result.mask.heads = q.heads;
  auto ms = w.predictor->StageMs();
  if (!ms.ok()) return ms.status();
  result.graph_seconds = ((*ms)[kScores] + (*ms)[kTopLists] + (*ms)[kGraph]) * 1e-3;
  result.select_seconds = (*ms)[kSelect] * 1e-3;
  return result;
}

absl::StatusOr<KeepIndices> CudaBackend::Evict(const EvictInputs& in, const EvictParams& p) {
  auto shape = cpu::ResolveEvictShape(in, p);
  if (!shape.ok()) return shape.status();
  // random is defined by the CPU's seeded stream (one draw per kept token): it stays there.
  if (p.policy == EvictPolicy::kRandom) return cpu_->Evict(in, p);
  Worker& w = Pick();
  w.load.fetch_add(1);
  bool non_finite = false;
  absl::StatusOr<KeepIndices> out;
  {
    LoadGuard guard(w);
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
  Worker& w = Pick();
  w.load.fetch_add(1);
  LoadGuard guard(w);
  CAB_CUDA_RETURN(cudaSetDevice(w.predictor->device()));
  // One query head against its kv head (h / g): a batch of one, one head each.
  auto in = Upload(w, q, k, query_coarsening, p.estimator, b, 1, h, 1);
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

absl::StatusOr<CoarseBlocks> CudaBackend::Coarsen(const TensorView& x, int block_size) {
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

  Worker& w = Pick();
  w.load.fetch_add(1);
  LoadGuard guard(w);
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
    }
    // Other keys (max_batch, max_queue_delay_us, ...) are the server's; accepted and ignored here.
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
  return std::unique_ptr<Backend>(new CudaBackend(std::move(workers), options.cpu_threads));
}

}  // namespace cab::cuda
