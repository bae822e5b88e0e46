// Argument checks for the host API: every failure a caller can cause is INVALID_ARGUMENT naming
// the argument, so that a CLI or a server can pass the message on.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "attention_internal.h"

namespace cab::attention::internal {
namespace {

absl::Status SameDType(const TensorView& a, const TensorView& b, const char* name) {
  if (a.dtype != b.dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ".dtype: ", DTypeName(b.dtype), " differs from q.dtype ", DTypeName(a.dtype)));
  }
  return absl::OkStatus();
}

absl::Status CheckKV(const TensorView& q, const TensorView& k, const TensorView& v) {
  if (auto st = CheckTensor(q, 4, "q"); !st.ok()) return st;
  if (auto st = CheckTensor(k, 4, "k"); !st.ok()) return st;
  if (auto st = CheckTensor(v, 4, "v"); !st.ok()) return st;
  if (auto st = SameDType(q, k, "k"); !st.ok()) return st;
  if (auto st = SameDType(q, v, "v"); !st.ok()) return st;
  if (k.shape != v.shape) return absl::InvalidArgumentError("v.shape: must equal k.shape");
  if (k.shape[0] != q.shape[0]) return absl::InvalidArgumentError("k.shape[0]: batch differs from q's");
  if (k.shape[3] != q.shape[3]) return absl::InvalidArgumentError("k.shape[3]: head_dim differs from q's");
  if (q.shape[1] % k.shape[1] != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("k.shape[1]: kv heads ", k.shape[1], " must divide q heads ", q.shape[1]));
  }
  return absl::OkStatus();
}

float Scale(float scale, int64_t d) { return scale > 0 ? scale : static_cast<float>(1.0 / std::sqrt(double(d))); }

}  // namespace

absl::StatusOr<PrefillShape> CheckPrefill(const TensorView& q, const TensorView& k, const TensorView& v,
                                          const BlockMask& mask, const PrefillOptions& options) {
  if (auto st = CheckKV(q, k, v); !st.ok()) return st;
  if (k.shape[2] != q.shape[2]) {
    return absl::InvalidArgumentError("k.shape[2]: prefill needs as many keys as queries (N)");
  }
  if (options.block_size <= 0) return absl::InvalidArgumentError("block_size: must be > 0");
  if (!(options.scale >= 0) || std::isinf(options.scale)) return absl::InvalidArgumentError("scale: must be finite and >= 0");
  PrefillShape s;
  s.batch = static_cast<int>(q.shape[0]);
  s.q_heads = static_cast<int>(q.shape[1]);
  s.kv_heads = static_cast<int>(k.shape[1]);
  s.tokens = q.shape[2];
  s.head_dim = static_cast<int>(q.shape[3]);
  s.block_size = options.block_size;
  s.blocks = static_cast<int>((s.tokens + s.block_size - 1) / s.block_size);
  s.scale = Scale(options.scale, s.head_dim);
  if (mask.batch != s.batch) return absl::InvalidArgumentError(absl::StrCat("mask.batch: ", mask.batch, " != q batch ", s.batch));
  if (mask.heads != s.q_heads && mask.heads != 1) {
    return absl::InvalidArgumentError(absl::StrCat("mask.heads: ", mask.heads, " must be q heads ", s.q_heads, " or 1"));
  }
  if (mask.row_begin != 0 || mask.rows != s.blocks || mask.cols != s.blocks) {
    return absl::InvalidArgumentError(absl::StrCat("mask: rows must cover every query block (row_begin 0, rows = cols = ",
                                                   s.blocks, "), got row_begin ", mask.row_begin, ", rows ", mask.rows,
                                                   ", cols ", mask.cols));
  }
  s.mask_heads = mask.heads;
  const int64_t nrows = static_cast<int64_t>(mask.batch) * mask.heads * mask.rows;
  if (static_cast<int64_t>(mask.row_offsets.size()) != nrows + 1 || mask.row_offsets[0] != 0 ||
      mask.row_offsets[nrows] != mask.kept()) {
    return absl::InvalidArgumentError("mask.row_offsets: needs B*H*rows+1 entries from 0 to the number of col_indices");
  }
  for (int64_t r = 0; r < nrows; ++r) {
    const int64_t a = mask.row_offsets[r], b = mask.row_offsets[r + 1];
    if (b < a) return absl::InvalidArgumentError(absl::StrCat("mask.row_offsets: decreasing at row ", r));
    const int row = static_cast<int>(r % mask.rows);
    for (int64_t e = a; e < b; ++e) {
      const int32_t c = mask.col_indices[e];
      if (c < 0 || c >= mask.cols) return absl::InvalidArgumentError(absl::StrCat("mask.col_indices: ", c, " out of range at row ", r));
      if (e > a && c <= mask.col_indices[e - 1]) {
        return absl::InvalidArgumentError(absl::StrCat("mask.col_indices: not strictly ascending at row ", r));
      }
      if (options.causal && c > row) {
        return absl::InvalidArgumentError(absl::StrCat("mask.col_indices: block ", c, " above the diagonal in causal row ", row));
      }
    }
  }
  return s;
}

absl::StatusOr<DecodeShape> CheckDecode(const TensorView& q, const TensorView& k, const TensorView& v,
                                        const KeepIndices* keep, const DecodeOptions& options) {
  if (auto st = CheckKV(q, k, v); !st.ok()) return st;
  if (!(options.scale >= 0) || std::isinf(options.scale)) return absl::InvalidArgumentError("scale: must be finite and >= 0");
  DecodeShape s;
  s.batch = static_cast<int>(q.shape[0]);
  s.q_heads = static_cast<int>(q.shape[1]);
  s.q_len = static_cast<int>(q.shape[2]);
  s.head_dim = static_cast<int>(q.shape[3]);
  s.kv_heads = static_cast<int>(k.shape[1]);
  s.tokens = k.shape[2];
  s.keep = s.tokens;
  s.scale = Scale(options.scale, s.head_dim);
  if (keep != nullptr) {
    if (keep->batch != s.batch || keep->kv_heads != s.kv_heads) {
      return absl::InvalidArgumentError(absl::StrCat("keep: batch/kv_heads ", keep->batch, "/", keep->kv_heads,
                                                     " != k's ", s.batch, "/", s.kv_heads));
    }
    if (keep->per_head <= 0 ||
        static_cast<int64_t>(keep->indices.size()) != keep->per_head * s.batch * s.kv_heads) {
      return absl::InvalidArgumentError("keep.indices: needs B * Hkv * per_head (> 0) entries");
    }
    for (int64_t r = 0; r < static_cast<int64_t>(s.batch) * s.kv_heads; ++r) {
      const int64_t* row = keep->indices.data() + r * keep->per_head;
      for (int64_t e = 0; e < keep->per_head; ++e) {
        if (row[e] < 0 || row[e] >= s.tokens) {
          return absl::InvalidArgumentError(absl::StrCat("keep.indices: ", row[e], " out of [0, ", s.tokens, ")"));
        }
        if (e > 0 && row[e] <= row[e - 1]) return absl::InvalidArgumentError("keep.indices: rows must be strictly ascending");
      }
    }
    s.keep = keep->per_head;
  }
  return s;
}

}  // namespace cab::attention::internal
