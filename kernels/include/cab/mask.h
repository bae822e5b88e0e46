// Block masks and their three wire formats (SPEC 3).
// The canonical form is block-sparse rows (CSR): for every (batch, head, query-block row) the kept
// key blocks, ascending. Bitmap and FlexAttention layouts convert to and from it losslessly.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace cab {

struct BlockMask {
  int batch = 0, heads = 0;
  int row_begin = 0;   // first query block answered
  int rows = 0;        // query-block rows answered (row_begin .. row_begin + rows - 1)
  int cols = 0;        // key blocks M
  // CSR over batch*heads*rows rows, in (b, h, row) order: row r's columns are
  // col_indices[row_offsets[r] .. row_offsets[r+1]), strictly ascending.
  std::vector<int64_t> row_offsets;
  std::vector<int32_t> col_indices;

  int64_t RowIndex(int b, int h, int row) const {  // row relative to row_begin
    return (static_cast<int64_t>(b) * heads + h) * rows + row;
  }
  int64_t kept() const { return static_cast<int64_t>(col_indices.size()); }
  // Kept pairs over causal pairs (or all pairs when causal == false) of the answered rows.
  double Density(bool causal) const;
  // Returns an error naming the broken invariant (offsets, order, range, causality if asked).
  absl::Status Check(bool causal) const;
};

// Bitmap [B, H, rows, cols]: bit (r, c) at byte r * ceil(cols/8) + c/8, bit c%8 (LSB first).
struct BitmapMask {
  int batch = 0, heads = 0, row_begin = 0, rows = 0, cols = 0;
  std::vector<uint8_t> bits;
  int64_t RowBytes() const { return (cols + 7) / 8; }
};

// FlexAttention layout: kv_num_blocks [B, H, rows] and kv_indices [B, H, rows, max_k], each row's
// first kv_num_blocks entries ascending, the rest padded with 0. A PyTorch user pads kv_indices to
// [.., cols] and calls BlockMask.from_kv_blocks.
struct FlexMask {
  int batch = 0, heads = 0, row_begin = 0, rows = 0, cols = 0, max_k = 0;
  std::vector<int32_t> kv_num_blocks;
  std::vector<int32_t> kv_indices;
};

BitmapMask ToBitmap(const BlockMask& m);
FlexMask ToFlex(const BlockMask& m);
absl::StatusOr<BlockMask> FromBitmap(const BitmapMask& m);
absl::StatusOr<BlockMask> FromFlex(const FlexMask& m);

}  // namespace cab
