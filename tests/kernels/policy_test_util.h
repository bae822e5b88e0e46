// Helpers of the mask-policy, eviction and backend tests: random coarse inputs through the CPU
// backend, and reading a mask row back as a set.
#pragma once

#include <cstdint>
#include <vector>

#include "cab/backend.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cab {
namespace test {

struct CoarsePair {
  CoarseBlocks q, k;
};

// Q [B, Hq, N, D] and K [B, Hkv, N, D] from seeded grid values, coarsened in blocks of `block_size`.
inline CoarsePair RandomCoarsePair(Backend& backend, int B, int Hq, int Hkv, int64_t N, int D, int block_size,
                                   uint64_t seed, DType dtype = DType::kF32) {
  const OwnedTensor q = RandomTensor({B, Hq, N, D}, dtype, seed);
  const OwnedTensor k = RandomTensor({B, Hkv, N, D}, dtype, seed + 1000);
  auto qc = backend.Coarsen(q.view(), block_size);
  auto kc = backend.Coarsen(k.view(), block_size);
  EXPECT_TRUE(qc.ok()) << qc.status();
  EXPECT_TRUE(kc.ok()) << kc.status();
  return {std::move(*qc), std::move(*kc)};
}

// Kept key blocks of answered row `row` (relative to row_begin) of (b, h).
inline std::vector<int32_t> MaskRow(const BlockMask& m, int b, int h, int row) {
  const int64_t r = m.RowIndex(b, h, row);
  return std::vector<int32_t>(m.col_indices.begin() + m.row_offsets[r], m.col_indices.begin() + m.row_offsets[r + 1]);
}

}  // namespace test
}  // namespace cab
