// Backend::PredictMaskFromRepresentatives, the default every backend starts from: the host coarse
// state built from the client's representatives, then PredictMask.
#include <chrono>

#include "absl/strings/str_cat.h"
#include "cab/backend.h"

namespace cab {

absl::StatusOr<MaskResult> Backend::PredictMaskFromRepresentatives(const RepresentativeInputs& in, const MaskParams& p,
                                                                   bool diagnostics, const CallContext& call) {
  const auto start = std::chrono::steady_clock::now();
  // Errors carry the request's field names (q_rep, k_rep) in front of CoarseFromRepresentatives' own.
  auto q = CoarseFromRepresentatives(in.q, nullptr, nullptr, in.block_size, in.tokens);
  if (!q.ok()) return absl::Status(q.status().code(), absl::StrCat("q_rep: ", q.status().message()));
  auto k = CoarseFromRepresentatives(in.k, in.kmin, in.kmax, in.block_size, in.tokens);
  if (!k.ok()) return absl::Status(k.status().code(), absl::StrCat("k_rep: ", k.status().message()));
  const double coarsen = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  auto r = PredictMask(*q, *k, p, diagnostics, call);
  if (r.ok()) r->coarsen_seconds = coarsen;
  return r;
}

}  // namespace cab
