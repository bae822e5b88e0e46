// Parameters of every op, with the defaults SPEC.md gives. Validate() on each returns an
// INVALID_ARGUMENT status that names the offending field, so the server can pass it on verbatim.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cab {

// How a block of tokens is summarised by one vector (SPEC 1).
enum class Coarsening { kMaxL2 = 0, kMean = 1 };
// Which block scores S feed the affinity A (SPEC 2).
enum class Estimator { kMaxL2 = 0, kMean = 1, kQuest = 2 };
// Curvature formula on graph edges (SPEC 2).
enum class CurvatureKind { kBalanced = 0, kForman = 1, kDirectRedundancy = 2 };
// Block-mask policies (SPEC 3).
enum class MaskPolicy { kCab = 0, kMagnitude, kRandom, kStreaming, kQuest, kDense, kAdaptive };
// KV-cache eviction policies (SPEC 4).
enum class EvictPolicy { kH2O = 0, kStreaming, kCab, kSnapKV, kRandom };

absl::StatusOr<Coarsening> ParseCoarsening(const std::string& s);      // "max_l2" | "mean"
absl::StatusOr<Estimator> ParseEstimator(const std::string& s);        // "max_l2" | "mean" | "quest"
absl::StatusOr<CurvatureKind> ParseCurvature(const std::string& s);    // "balanced" | "forman" | "direct_redundancy"
absl::StatusOr<MaskPolicy> ParseMaskPolicy(const std::string& s);      // "cab" | "magnitude" | ... | "adaptive"
absl::StatusOr<EvictPolicy> ParseEvictPolicy(const std::string& s);    // "h2o" | "streaming" | "cab" | "snapkv" | "random"
std::string Name(Coarsening v);
std::string Name(Estimator v);
std::string Name(CurvatureKind v);
std::string Name(MaskPolicy v);
std::string Name(EvictPolicy v);

// The block graph and its curvature.
struct GraphParams {
  Estimator estimator = Estimator::kMaxL2;
  bool causal = true;      // key block j visible to query block i only if j <= i
  int degree = 32;         // r: each block links to its r strongest neighbours by A (self excluded)
  CurvatureKind curvature = CurvatureKind::kBalanced;
  float lambda = 1.0f;     // direct-redundancy only
  absl::Status Validate() const;
};

// Block-mask prediction (prefill).
struct MaskParams {
  MaskPolicy policy = MaskPolicy::kCab;
  GraphParams graph;
  Coarsening query_coarsening = Coarsening::kMaxL2;  // which query representative S uses
  float sparsity = 0.95f;   // fraction of causal pairs dropped, in [0, 1)
  int blocks_per_row = 0;   // > 0: fixed per-row budget instead of sparsity
  int min_keep = 1;         // lower bound of every row budget
  int sink_blocks = 1;      // blocks 0..sink_blocks-1 (cab local share, streaming)
  int local_blocks = 1;     // w preceding blocks of the local window (cab local share, streaming)
  float local_ratio = 0.3f;
  float bridge_ratio = 0.2f;
  float importance_ratio = 0.5f;
  uint64_t seed = 0;        // random policy
  float adaptive_tau = 0.9f;  // adaptive: cover this share of the row's A mass ...
  float adaptive_z = 1.0f;    // ... plus every edge with F < mean - z * std of the row
  // Rows to answer: query blocks [row_begin, row_end); row_end < 0 means "to the last block".
  int row_begin = 0;
  int row_end = -1;
  absl::Status Validate() const;
};

// Row budget k_i for query block i (0-based) under `p`, before clamping to the candidate count.
int RowBudget(const MaskParams& p, int row);

// KV-cache eviction (decode).
struct EvictParams {
  EvictPolicy policy = EvictPolicy::kCab;
  int64_t keep = 0;          // exactly this many indices per (batch, kv head); all N when keep >= N
  int sink_tokens = 4;       // streaming
  float local_ratio = 0.3f;  // recent share (h2o uses 0.2 when left at its default, see h2o_local_ratio)
  float h2o_local_ratio = 0.2f;
  float bridge_ratio = 0.2f;
  float importance_ratio = 0.5f;
  int block_size = 64;       // cab: block graph over blocks of this many tokens
  GraphParams graph;
  int snapkv_pool = 7;       // snapkv max-pool width (odd)
  uint64_t seed = 0;
  absl::Status Validate() const;
};

}  // namespace cab
