// The CPU backend: the reference implementation of every op and the server's embedded default.
// Work items are (batch, head) pairs on one bounded thread pool shared by all callers; each item
// holds O(M^2) memory for its head graph, so a call never holds more than threads x O(M^2).
#include <cblas.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "cab/backend.h"
#include "cpu_backend_predict.h"
#include "evict_cpu.h"
#include "thread_pool.h"

namespace cab {
namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuBackendOptions& options) : pool_(options.threads) {
    // The backend already runs one (batch, head) per pool thread; OpenBLAS's own threads on top
    // would oversubscribe the cores, so each sgemm stays single-threaded.
    openblas_set_num_threads(1);
  }

  std::string Name() const override { return "cpu"; }
  std::vector<std::string> Devices() const override {
    return {absl::StrCat("cpu (", pool_.threads(), " threads)")};
  }

  absl::StatusOr<CoarseBlocks> Coarsen(const TensorView& x, int block_size) override {
    return CoarsenCpu(x, block_size);
  }

  absl::StatusOr<HeadGraph> Graph(const CoarseBlocks& q, const CoarseBlocks& k, int b, int h,
                                  Coarsening query_coarsening, const GraphParams& p) override {
    if (auto s = p.Validate(); !s.ok()) return s;
    if (auto s = cpu::CheckCoarsePair(q, k); !s.ok()) return s;
    if (b < 0 || b >= q.batch) return absl::InvalidArgumentError(absl::StrCat("batch index: ", b, " is outside [0, ", q.batch, ")"));
    if (h < 0 || h >= q.heads) return absl::InvalidArgumentError(absl::StrCat("head: ", h, " is outside [0, ", q.heads, ")"));
    return BuildHeadGraphCpu(q, k, b, h, query_coarsening, p);
  }

  absl::StatusOr<MaskResult> PredictMask(const CoarseBlocks& q, const CoarseBlocks& k, const MaskParams& p,
                                         bool diagnostics) override {
    return cpu::PredictMaskCpu(q, k, p, diagnostics, pool_);
  }

  absl::StatusOr<KeepIndices> Evict(const EvictInputs& in, const EvictParams& p) override {
    return cpu::EvictCpu(in, p, pool_);
  }

 private:
  cpu::ThreadPool pool_;
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend(const CpuBackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

}  // namespace cab
