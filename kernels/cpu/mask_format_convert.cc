// Conversions between the CSR block mask and its bitmap and FlexAttention layouts (lossless).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "cab/mask.h"

namespace cab {
namespace {

int64_t RowsOf(int batch, int heads, int rows) { return static_cast<int64_t>(batch) * heads * rows; }

absl::Status CheckDims(int batch, int heads, int row_begin, int rows, int cols, const char* what) {
  if (batch < 0 || heads < 0 || row_begin < 0 || rows < 0 || cols < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": negative dimension (batch ", batch, ", heads ", heads,
                                                   ", row_begin ", row_begin, ", rows ", rows, ", cols ", cols, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

BitmapMask ToBitmap(const BlockMask& m) {
  BitmapMask out{m.batch, m.heads, m.row_begin, m.rows, m.cols, {}};
  const int64_t row_bytes = out.RowBytes();
  const int64_t total_rows = RowsOf(m.batch, m.heads, m.rows);
  out.bits.assign(static_cast<size_t>(total_rows * row_bytes), 0);
  for (int64_t r = 0; r < total_rows; ++r) {
    uint8_t* row = out.bits.data() + r * row_bytes;
    for (int64_t e = m.row_offsets[r]; e < m.row_offsets[r + 1]; ++e) {
      const int32_t c = m.col_indices[e];
      row[c / 8] |= static_cast<uint8_t>(1u << (c % 8));
    }
  }
  return out;
}

FlexMask ToFlex(const BlockMask& m) {
  FlexMask out{m.batch, m.heads, m.row_begin, m.rows, m.cols, 0, {}, {}};
  const int64_t total_rows = RowsOf(m.batch, m.heads, m.rows);
  for (int64_t r = 0; r < total_rows; ++r) {
    out.max_k = std::max<int>(out.max_k, static_cast<int>(m.row_offsets[r + 1] - m.row_offsets[r]));
  }
  out.kv_num_blocks.resize(total_rows);
  out.kv_indices.assign(static_cast<size_t>(total_rows * out.max_k), 0);
  for (int64_t r = 0; r < total_rows; ++r) {
    const int64_t begin = m.row_offsets[r], count = m.row_offsets[r + 1] - begin;
    out.kv_num_blocks[r] = static_cast<int32_t>(count);
    std::copy(m.col_indices.begin() + begin, m.col_indices.begin() + begin + count,
              out.kv_indices.begin() + r * out.max_k);
  }
  return out;
}

absl::StatusOr<BlockMask> FromBitmap(const BitmapMask& m) {
  if (auto s = CheckDims(m.batch, m.heads, m.row_begin, m.rows, m.cols, "bitmap"); !s.ok()) return s;
  const int64_t row_bytes = m.RowBytes();
  const int64_t total_rows = RowsOf(m.batch, m.heads, m.rows);
  if (static_cast<int64_t>(m.bits.size()) != total_rows * row_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("bitmap: has ", m.bits.size(), " bytes, expected batch*heads*rows*ceil(cols/8) = ",
                                                   total_rows * row_bytes));
  }
  BlockMask out;
  out.batch = m.batch, out.heads = m.heads, out.row_begin = m.row_begin, out.rows = m.rows, out.cols = m.cols;
  out.row_offsets.reserve(total_rows + 1);
  out.row_offsets.push_back(0);
  for (int64_t r = 0; r < total_rows; ++r) {
    const uint8_t* row = m.bits.data() + r * row_bytes;
    for (int64_t byte = 0; byte < row_bytes; ++byte) {
      for (int bit = 0; bit < 8 && row[byte] >> bit; ++bit) {
        if (!((row[byte] >> bit) & 1)) continue;
        const int64_t c = byte * 8 + bit;
        if (c >= m.cols) {
          return absl::InvalidArgumentError(absl::StrCat("bitmap: bit ", c, " of row ", r, " is set beyond cols (", m.cols, ")"));
        }
        out.col_indices.push_back(static_cast<int32_t>(c));
      }
    }
    out.row_offsets.push_back(static_cast<int64_t>(out.col_indices.size()));
  }
  return out;
}

absl::StatusOr<BlockMask> FromFlex(const FlexMask& m) {
  if (auto s = CheckDims(m.batch, m.heads, m.row_begin, m.rows, m.cols, "flex"); !s.ok()) return s;
  if (m.max_k < 0) return absl::InvalidArgumentError(absl::StrCat("flex.max_k: ", m.max_k, " must be >= 0"));
  const int64_t total_rows = RowsOf(m.batch, m.heads, m.rows);
  if (static_cast<int64_t>(m.kv_num_blocks.size()) != total_rows) {
    return absl::InvalidArgumentError(absl::StrCat("flex.kv_num_blocks: has ", m.kv_num_blocks.size(),
                                                   " entries, expected batch*heads*rows = ", total_rows));
  }
  if (static_cast<int64_t>(m.kv_indices.size()) != total_rows * m.max_k) {
    return absl::InvalidArgumentError(absl::StrCat("flex.kv_indices: has ", m.kv_indices.size(),
                                                   " entries, expected batch*heads*rows*max_k = ", total_rows * m.max_k));
  }
  BlockMask out;
  out.batch = m.batch, out.heads = m.heads, out.row_begin = m.row_begin, out.rows = m.rows, out.cols = m.cols;
  out.row_offsets.reserve(total_rows + 1);
  out.row_offsets.push_back(0);
  for (int64_t r = 0; r < total_rows; ++r) {
    const int32_t count = m.kv_num_blocks[r];
    if (count < 0 || count > m.max_k) {
      return absl::InvalidArgumentError(absl::StrCat("flex.kv_num_blocks: ", count, " at row ", r, " is outside [0, max_k = ",
                                                     m.max_k, "]"));
    }
    const int32_t* idx = m.kv_indices.data() + r * m.max_k;
    for (int32_t e = 0; e < count; ++e) {
      if (idx[e] < 0 || idx[e] >= m.cols) {
        return absl::InvalidArgumentError(absl::StrCat("flex.kv_indices: ", idx[e], " at row ", r, " is outside [0, ", m.cols, ")"));
      }
      if (e > 0 && idx[e] <= idx[e - 1]) {
        return absl::InvalidArgumentError(absl::StrCat("flex.kv_indices: row ", r, " is not strictly ascending"));
      }
      out.col_indices.push_back(idx[e]);
    }
    out.row_offsets.push_back(static_cast<int64_t>(out.col_indices.size()));
  }
  return out;
}

}  // namespace cab
