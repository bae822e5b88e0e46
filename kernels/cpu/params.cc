#include "cab/params.h"

#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace cab {
namespace {

template <typename E>
using Names = std::vector<std::pair<const char*, E>>;

const Names<Coarsening>& CoarseningNames() {
  static const Names<Coarsening> n = {{"max_l2", Coarsening::kMaxL2}, {"mean", Coarsening::kMean}};
  return n;
}
const Names<Estimator>& EstimatorNames() {
  static const Names<Estimator> n = {
      {"max_l2", Estimator::kMaxL2}, {"mean", Estimator::kMean}, {"quest", Estimator::kQuest}};
  return n;
}
const Names<CurvatureKind>& CurvatureNames() {
  static const Names<CurvatureKind> n = {{"balanced", CurvatureKind::kBalanced},
                                         {"forman", CurvatureKind::kForman},
                                         {"direct_redundancy", CurvatureKind::kDirectRedundancy}};
  return n;
}
const Names<MaskPolicy>& MaskPolicyNames() {
  static const Names<MaskPolicy> n = {
      {"cab", MaskPolicy::kCab},     {"magnitude", MaskPolicy::kMagnitude}, {"random", MaskPolicy::kRandom},
      {"streaming", MaskPolicy::kStreaming}, {"quest", MaskPolicy::kQuest}, {"dense", MaskPolicy::kDense},
      {"adaptive", MaskPolicy::kAdaptive}};
  return n;
}
const Names<EvictPolicy>& EvictPolicyNames() {
  static const Names<EvictPolicy> n = {{"h2o", EvictPolicy::kH2O},
                                       {"streaming", EvictPolicy::kStreaming},
                                       {"cab", EvictPolicy::kCab},
                                       {"snapkv", EvictPolicy::kSnapKV},
                                       {"random", EvictPolicy::kRandom}};
  return n;
}

template <typename E>
absl::StatusOr<E> Parse(const Names<E>& names, const std::string& s, const char* what) {
  std::string all;
  for (const auto& [name, value] : names) {
    if (s == name) return value;
    absl::StrAppend(&all, all.empty() ? "" : ", ", name);
  }
  return absl::InvalidArgumentError(absl::StrCat(what, ": unknown value '", s, "' (one of: ", all, ")"));
}

template <typename E>
std::string NameOf(const Names<E>& names, E v) {
  for (const auto& [name, value] : names) {
    if (value == v) return name;
  }
  return "unknown";
}

absl::Status CheckRatio(float v, const char* what) {
  if (!(v >= 0.f && v <= 1.f)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", v, " is outside [0, 1]"));
  }
  return absl::OkStatus();
}

absl::Status CheckShares(float local, float bridge, float importance, const char* prefix) {
  for (auto [v, name] : {std::pair{local, "local_ratio"}, {bridge, "bridge_ratio"}, {importance, "importance_ratio"}}) {
    if (auto s = CheckRatio(v, absl::StrCat(prefix, name).c_str()); !s.ok()) return s;
  }
  const float sum = local + bridge + importance;
  if (std::fabs(sum - 1.f) > 1e-3f) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, "local_ratio + bridge_ratio + importance_ratio: sum is ",
                                                   sum, ", must be 1"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Coarsening> ParseCoarsening(const std::string& s) { return Parse(CoarseningNames(), s, "coarsening"); }
absl::StatusOr<Estimator> ParseEstimator(const std::string& s) { return Parse(EstimatorNames(), s, "estimator"); }
absl::StatusOr<CurvatureKind> ParseCurvature(const std::string& s) { return Parse(CurvatureNames(), s, "curvature"); }
absl::StatusOr<MaskPolicy> ParseMaskPolicy(const std::string& s) { return Parse(MaskPolicyNames(), s, "policy"); }
absl::StatusOr<EvictPolicy> ParseEvictPolicy(const std::string& s) { return Parse(EvictPolicyNames(), s, "policy"); }
std::string Name(Coarsening v) { return NameOf(CoarseningNames(), v); }
std::string Name(Estimator v) { return NameOf(EstimatorNames(), v); }
std::string Name(CurvatureKind v) { return NameOf(CurvatureNames(), v); }
std::string Name(MaskPolicy v) { return NameOf(MaskPolicyNames(), v); }
std::string Name(EvictPolicy v) { return NameOf(EvictPolicyNames(), v); }

absl::Status GraphParams::Validate() const {
  if (degree < 1 || degree > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("graph_degree: ", degree, " is outside [1, 4096]"));
  }
  if (!std::isfinite(lambda) || lambda < 0.f) {
    return absl::InvalidArgumentError(absl::StrCat("lambda: ", lambda, " must be finite and >= 0"));
  }
  return absl::OkStatus();
}

absl::Status MaskParams::Validate() const {
  if (auto s = graph.Validate(); !s.ok()) return s;
  if (!(sparsity >= 0.f && sparsity < 1.f)) {
    return absl::InvalidArgumentError(absl::StrCat("sparsity: ", sparsity, " is outside [0, 1)"));
  }
  if (blocks_per_row < 0) {
    return absl::InvalidArgumentError(absl::StrCat("blocks_per_row: ", blocks_per_row, " must be >= 0"));
  }
  if (min_keep < 1) return absl::InvalidArgumentError(absl::StrCat("min_keep: ", min_keep, " must be >= 1"));
  if (sink_blocks < 0) return absl::InvalidArgumentError(absl::StrCat("sink_blocks: ", sink_blocks, " must be >= 0"));
  if (local_blocks < 0) return absl::InvalidArgumentError(absl::StrCat("local_blocks: ", local_blocks, " must be >= 0"));
  if (policy == MaskPolicy::kCab) {
    if (auto s = CheckShares(local_ratio, bridge_ratio, importance_ratio, ""); !s.ok()) return s;
  }
  if (policy == MaskPolicy::kAdaptive) {
    if (!(adaptive_tau > 0.f && adaptive_tau <= 1.f)) {
      return absl::InvalidArgumentError(absl::StrCat("adaptive_tau: ", adaptive_tau, " is outside (0, 1]"));
    }
    if (!std::isfinite(adaptive_z)) return absl::InvalidArgumentError("adaptive_z: must be finite");
  }
  if (row_begin < 0) return absl::InvalidArgumentError(absl::StrCat("row_begin: ", row_begin, " must be >= 0"));
  if (row_end >= 0 && row_end <= row_begin) {
    return absl::InvalidArgumentError(absl::StrCat("row_end: ", row_end, " must be > row_begin (", row_begin, ")"));
  }
  return absl::OkStatus();
}

int RowBudget(const MaskParams& p, int row) {
  int k;
  if (p.blocks_per_row > 0) {
    k = p.blocks_per_row;
  } else {
    const double causal_candidates = row + 1.0;
    // The small epsilon keeps exact products (0.05 * 20 = 1) from rounding up to the next block.
    k = static_cast<int>(std::ceil((1.0 - p.sparsity) * causal_candidates - 1e-6));
  }
  return k < p.min_keep ? p.min_keep : k;
}

absl::Status EvictParams::Validate() const {
  if (keep < 1) return absl::InvalidArgumentError(absl::StrCat("keep: ", keep, " must be >= 1"));
  if (sink_tokens < 0) return absl::InvalidArgumentError(absl::StrCat("sink_tokens: ", sink_tokens, " must be >= 0"));
  if (auto s = CheckRatio(h2o_local_ratio, "local_ratio"); !s.ok()) return s;
  if (policy == EvictPolicy::kCab) {
    if (auto s = CheckShares(local_ratio, bridge_ratio, importance_ratio, ""); !s.ok()) return s;
  }
  if (block_size < 1 || block_size > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("block_size: ", block_size, " is outside [1, 4096]"));
  }
  if (snapkv_pool < 1 || snapkv_pool % 2 == 0) {
    return absl::InvalidArgumentError(absl::StrCat("snapkv_pool: ", snapkv_pool, " must be odd and >= 1"));
  }
  return graph.Validate();
}

}  // namespace cab
