#include "limits_check.h"

#include "absl/strings/str_cat.h"

namespace cab::server {

absl::Status CheckSequenceLimits(const SequenceShape& s, const Limits& l, absl::string_view field) {
  auto exhausted = [&](const char* what, int64_t value, const char* flag, int64_t limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat(field, ": ", what, " ", value, " exceeds --", flag, "=", limit));
  };
  if (s.heads > l.max_heads) return exhausted("heads", s.heads, "max_heads", l.max_heads);
  if (s.head_dim > l.max_head_dim) return exhausted("head_dim", s.head_dim, "max_head_dim", l.max_head_dim);
  // Divide rather than multiply: batch * tokens may overflow for hostile shapes.
  if (s.batch < 1 || s.tokens > l.max_tokens / s.batch) {
    return absl::ResourceExhaustedError(absl::StrCat(field, ": batch ", s.batch, " * tokens ", s.tokens,
                                                     " exceeds --max_tokens=", l.max_tokens));
  }
  if (s.block_size > 0) {
    const int64_t blocks = CeilDiv(s.tokens, s.block_size);
    if (blocks > l.max_blocks) return exhausted("blocks", blocks, "max_blocks", l.max_blocks);
  }
  return absl::OkStatus();
}

int64_t CoarseBytesEstimate(int64_t batch, int64_t heads, int64_t blocks, int64_t dim) {
  return batch * heads * blocks * (4 * dim + 2) * 4;
}

}  // namespace cab::server
