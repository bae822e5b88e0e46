// One test problem (shapes, dtype, seeded Q/K), the requests built from it, and the answers the
// in-process CPU backend (cab::MakeCpuBackend, the reference) gives for the same inputs.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "cab/backend.h"
#include "cab/v1/cab.pb.h"
#include "tensors.h"
#include "test_params.h"

namespace cab_it {

struct ProblemShape {
  int batch = 1, heads = 4, kv_heads = 2, head_dim = 32, block_size = 32;
  int64_t tokens = 1000;  // not a multiple of the block size: the last block is partial
  cab::DType dtype = cab::DType::kF32;
  uint64_t seed = 1;
  int blocks() const { return static_cast<int>((tokens + block_size - 1) / block_size); }
};

struct Problem {
  ProblemShape shape;
  HostTensor q, k;  // exact fp32 values of what goes on the wire (already rounded to the dtype)
};
Problem MakeProblem(const ProblemShape& s);

// Unary request with full Q/K.
cab::v1::PredictRequest FullRequest(const Problem& pb, const TestMaskParams& p, cab::v1::MaskFormat format);
// Unary request with max-L2 representatives and the channel-wise min / max of the key blocks.
cab::v1::PredictRequest RepresentativesRequest(const Problem& pb, const TestMaskParams& p, cab::v1::MaskFormat format);

cab::Backend& CpuReference();
// The reference mask for q / k of the first `tokens` tokens of the problem (all when 0).
absl::StatusOr<cab::MaskResult> ReferenceMask(const Problem& pb, const TestMaskParams& p, int64_t tokens = 0);

}  // namespace cab_it
