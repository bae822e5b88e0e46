// BlockMask invariants and density (the canonical CSR form of a block mask).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "cab/mask.h"

namespace cab {

double BlockMask::Density(bool causal) const {
  // Candidate pairs of the answered rows, per (batch, head): row i sees min(i + 1, cols) blocks
  // when causal, all cols otherwise.
  double pairs = 0;
  for (int r = 0; r < rows; ++r) {
    pairs += causal ? std::min<int64_t>(static_cast<int64_t>(row_begin) + r + 1, cols) : cols;
  }
  pairs *= static_cast<double>(batch) * heads;
  return pairs > 0 ? static_cast<double>(kept()) / pairs : 0.0;
}

absl::Status BlockMask::Check(bool causal) const {
  if (batch < 0 || heads < 0 || rows < 0 || cols < 0 || row_begin < 0) {
    return absl::InvalidArgumentError(absl::StrCat("mask: negative dimension (batch ", batch, ", heads ", heads,
                                                   ", row_begin ", row_begin, ", rows ", rows, ", cols ", cols, ")"));
  }
  const int64_t total_rows = static_cast<int64_t>(batch) * heads * rows;
  if (static_cast<int64_t>(row_offsets.size()) != total_rows + 1) {
    return absl::InvalidArgumentError(absl::StrCat("mask.row_offsets: has ", row_offsets.size(),
                                                   " entries, expected batch*heads*rows + 1 = ", total_rows + 1));
  }
  if (row_offsets[0] != 0) return absl::InvalidArgumentError("mask.row_offsets: must start at 0");
  if (row_offsets.back() != kept()) {
    return absl::InvalidArgumentError(absl::StrCat("mask.row_offsets: ends at ", row_offsets.back(),
                                                   ", but col_indices has ", kept(), " entries"));
  }
  for (int64_t r = 0; r < total_rows; ++r) {
    const int64_t begin = row_offsets[r], end = row_offsets[r + 1];
    if (end < begin || begin < 0 || end > kept()) {
      return absl::InvalidArgumentError(absl::StrCat("mask.row_offsets: not non-decreasing at row ", r));
    }
    const int64_t query_block = row_begin + r % std::max(rows, 1);
    for (int64_t e = begin; e < end; ++e) {
      const int32_t c = col_indices[e];
      if (c < 0 || c >= cols) {
        return absl::InvalidArgumentError(absl::StrCat("mask.col_indices: ", c, " at row ", r, " is outside [0, ", cols, ")"));
      }
      if (e > begin && c <= col_indices[e - 1]) {
        return absl::InvalidArgumentError(absl::StrCat("mask.col_indices: row ", r, " is not strictly ascending"));
      }
      if (causal && c > query_block) {
        return absl::InvalidArgumentError(absl::StrCat("mask.col_indices: key block ", c, " after query block ",
                                                       query_block, " in a causal mask"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace cab
