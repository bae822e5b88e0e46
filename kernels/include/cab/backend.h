// The backend interface: every compute op of the service, implemented by the CPU backend (the
// reference and embedded default) and by the CUDA backend (a plugin loaded with dlopen).
// Backends are thread-safe: the server calls them from several worker threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/coarse.h"
#include "cab/evict.h"
#include "cab/graph.h"
#include "cab/mask.h"
#include "cab/params.h"
#include "cab/tensor.h"

namespace cab {

struct HeadDiagnostics {
  CurvatureStats curvature;
  double density = 0;  // kept pairs / causal pairs of the answered rows
};

struct MaskDiagnostics {
  std::vector<HeadDiagnostics> heads;  // [B * Hq], (b, h) order
  double density = 0;                  // over all heads
  double prediction_flops = 0;         // estimate of the predictor's arithmetic (see docs/)
};

struct MaskResult {
  BlockMask mask;
  MaskDiagnostics diagnostics;  // filled only when asked for
  // Wall time of the two stages inside PredictMask, for the server's per-stage metrics.
  double graph_seconds = 0;     // scores, affinity, graph, curvature
  double select_seconds = 0;    // per-row selection and mask assembly
  // Taking in client-sent representatives (PredictMaskFromRepresentatives): validation and, where
  // the backend needs it, the host coarse state built from them. 0 for PredictMask.
  double coarsen_seconds = 0;
  // Which entry of Backend::Devices() ran the call; -1 where no device did (the CPU backend, or an
  // op the CUDA backend answers on its embedded CPU backend). For tests and diagnostics.
  int device = -1;
};

// Per-call context. `session` (0: none) names the streaming session a call belongs to. A backend
// with several devices runs all of a session's calls on one device, chosen at its first call (new
// sessions go to the least loaded device), until ReleaseSession: today this keeps a session's work
// in one place; later it lets per-session state stay resident on that device. cab-server passes
// the session's key on a stream and none for unary requests.
struct CallContext {
  uint64_t session = 0;
};

// Representatives a client computed itself (SPEC 1 done on its side), as they arrived: q [B, Hq, M, D]
// and k [B, Hkv, M, D] serve as max-L2 and mean representatives alike; kmin / kmax (both or neither,
// shaped like k) are Quest's key bounds. `tokens` is N (M = ceil(N / block_size)). The views must
// outlive the call.
struct RepresentativeInputs {
  TensorView q, k;
  const TensorView* kmin = nullptr;
  const TensorView* kmax = nullptr;
  int block_size = 0;
  int64_t tokens = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string Name() const = 0;          // "cpu", "cuda"
  virtual std::vector<std::string> Devices() const = 0;

  // SPEC 1. x: [B, H, N, D], any dtype.
  virtual absl::StatusOr<CoarseBlocks> Coarsen(const TensorView& x, int block_size) = 0;

  // SPEC 2 for one (batch, query head); exposed for diagnostics and the cross-backend test.
  virtual absl::StatusOr<HeadGraph> Graph(const CoarseBlocks& q, const CoarseBlocks& k, int b, int h,
                                          Coarsening query_coarsening, const GraphParams& p) = 0;

  // SPEC 2 + 3 for every (batch, query head). q and k must share batch, blocks and block size;
  // q.heads must be a multiple of k.heads.
  virtual absl::StatusOr<MaskResult> PredictMask(const CoarseBlocks& q, const CoarseBlocks& k,
                                                 const MaskParams& p, bool diagnostics) = 0;

  // SPEC 4.
  virtual absl::StatusOr<KeepIndices> Evict(const EvictInputs& in, const EvictParams& p) = 0;

  // The same ops within a call context (see CallContext). The defaults ignore it: a backend with
  // one place to run (the CPU backend) overrides only the forms above.
  virtual absl::StatusOr<CoarseBlocks> Coarsen(const TensorView& x, int block_size, const CallContext& call) {
    (void)call;
    return Coarsen(x, block_size);
  }
  virtual absl::StatusOr<MaskResult> PredictMask(const CoarseBlocks& q, const CoarseBlocks& k, const MaskParams& p,
                                                 bool diagnostics, const CallContext& call) {
    (void)call;
    return PredictMask(q, k, p, diagnostics);
  }
  virtual absl::StatusOr<KeepIndices> Evict(const EvictInputs& in, const EvictParams& p, const CallContext& call) {
    (void)call;
    return Evict(in, p);
  }
  // PredictMask on client-sent representatives. The default builds the host coarse state
  // (CoarseFromRepresentatives; errors name q_rep / k_rep / k_min / k_max as the request does) and
  // calls PredictMask; a backend that can read the wire tensors directly overrides it (the CUDA
  // backend uploads bf16 representatives as they are). Same masks either way.
  virtual absl::StatusOr<MaskResult> PredictMaskFromRepresentatives(const RepresentativeInputs& in,
                                                                    const MaskParams& p, bool diagnostics,
                                                                    const CallContext& call);
  // The session ended (any reason): its device slot is freed. Idempotent; a later call with the same
  // key counts as a new session. Default: nothing to free.
  virtual void ReleaseSession(uint64_t session) { (void)session; }
};

struct CpuBackendOptions {
  int threads = 0;  // 0: hardware concurrency (bounded)
};
std::unique_ptr<Backend> MakeCpuBackend(const CpuBackendOptions& options = {});

// Estimate of the predictor's floating-point work for M blocks, D dims, H heads (see docs/).
double PredictionFlops(int64_t tokens, int blocks, int dim, int heads, int degree);

}  // namespace cab
