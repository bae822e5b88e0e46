// Mask and eviction parameters written once by a test and expressed twice: as the wire message the
// server receives, and as the cab:: struct the in-process CPU reference runs with. The mapping is the
// test's own (not cab_wire's), so a wrong mapping in the server shows up as a mask mismatch.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cab/params.h"
#include "cab/v1/cab.pb.h"

namespace cab_it {

struct TestMaskParams {
  cab::MaskPolicy policy = cab::MaskPolicy::kCab;
  cab::Estimator estimator = cab::Estimator::kMaxL2;
  cab::CurvatureKind curvature = cab::CurvatureKind::kBalanced;
  cab::Coarsening query_coarsening = cab::Coarsening::kMaxL2;
  float sparsity = 0.7f;
  int blocks_per_row = 0;
  int graph_degree = 6;
  bool causal = true;
  uint64_t seed = 7;
  int row_begin = 0, row_end = 0;  // wire convention: row_end 0 = through the last block
  // Sent only when set (the server's defaults apply otherwise).
  std::optional<int> min_keep, sink_blocks, local_blocks;
  std::optional<float> local_ratio, bridge_ratio, importance_ratio, lambda, adaptive_tau, adaptive_z;
};

cab::v1::MaskParams ToWire(const TestMaskParams& p);
cab::MaskParams ToCab(const TestMaskParams& p);

cab::v1::MaskPolicy WirePolicy(cab::MaskPolicy p);
// Every mask policy the service offers.
std::vector<cab::MaskPolicy> AllMaskPolicies();
std::vector<cab::v1::MaskFormat> AllMaskFormats();

struct TestEvictParams {
  cab::EvictPolicy policy = cab::EvictPolicy::kCab;
  int64_t keep = 40;
  int block_size = 16;
  int graph_degree = 4;
  uint64_t seed = 3;
  cab::CurvatureKind curvature = cab::CurvatureKind::kBalanced;
  std::optional<int> sink_tokens, snapkv_pool;
  std::optional<float> local_ratio, bridge_ratio, importance_ratio;
};
void FillWire(const TestEvictParams& p, cab::v1::EvictRequest* req);
cab::EvictParams ToCab(const TestEvictParams& p);
std::vector<cab::EvictPolicy> AllEvictPolicies();

}  // namespace cab_it
