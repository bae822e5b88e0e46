// Naive, independent decoding of a wire BlockMask (every format) into a dense keep matrix, so the
// tests compare what the server sent with the in-process CPU backend without trusting cab_wire.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/mask.h"
#include "cab/v1/cab.pb.h"

namespace cab_it {

struct DenseMask {
  int batch = 0, heads = 0, row_begin = 0, rows = 0, cols = 0;
  std::vector<uint8_t> keep;  // [B, H, rows, cols], 1 = kept
  uint8_t at(int b, int h, int r, int c) const {
    return keep[((static_cast<size_t>(b) * heads + h) * rows + r) * cols + c];
  }
  int64_t kept() const;
};

// Checks the format's invariants (dtypes, shapes, ascending in-range indices, zero padding) on
// the way; an error names the broken one.
absl::StatusOr<DenseMask> DecodeWireMask(const cab::v1::BlockMask& m);
DenseMask FromCab(const cab::BlockMask& m);

// Empty when equal; else a description of the first differences (for test failure messages).
std::string MaskDiff(const DenseMask& got, const DenseMask& want);

}  // namespace cab_it
