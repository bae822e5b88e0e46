#include "wire/mask_codec.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "wire/tensor_codec.h"

namespace cab::wire {
namespace {

// Sizes in a decoded mask are client data: bound them before multiplying.
constexpr int64_t kMaxMaskDim = int64_t{1} << 24;

absl::Status CheckDim(int64_t v, const char* field) {
  if (v < 0 || v > kMaxMaskDim) {
    return absl::InvalidArgumentError(absl::StrCat("mask.", field, ": ", v, " is outside [0, 2^24]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<cab::v1::MaskFormat> ResolveFormat(cab::v1::MaskFormat format, absl::string_view field) {
  switch (format) {
    case cab::v1::MASK_FORMAT_UNSPECIFIED:
    case cab::v1::MASK_FORMAT_BSR: return cab::v1::MASK_FORMAT_BSR;
    case cab::v1::MASK_FORMAT_BITMAP: return cab::v1::MASK_FORMAT_BITMAP;
    case cab::v1::MASK_FORMAT_FLEX: return cab::v1::MASK_FORMAT_FLEX;
    default:
      return absl::InvalidArgumentError(absl::StrCat(field, ": unknown mask format ", static_cast<int>(format),
                                                     " (MASK_FORMAT_BSR, MASK_FORMAT_BITMAP or MASK_FORMAT_FLEX)"));
  }
}

absl::Status EncodeMask(const cab::BlockMask& m, cab::v1::MaskFormat format, bool causal, cab::v1::BlockMask* out) {
  auto resolved = ResolveFormat(format, "format");
  if (!resolved.ok()) return resolved.status();
  out->Clear();
  out->set_batch(m.batch);
  out->set_heads(m.heads);
  out->set_row_begin(m.row_begin);
  out->set_rows(m.rows);
  out->set_cols(m.cols);
  out->set_format(*resolved);
  out->set_density(m.Density(causal));
  const int64_t b = m.batch, h = m.heads, r = m.rows;
  switch (*resolved) {
    case cab::v1::MASK_FORMAT_BITMAP: {
      const cab::BitmapMask bits = cab::ToBitmap(m);
      EncodeUint8({b, h, r, bits.RowBytes()}, bits.bits.data(), out->mutable_bitmap());
      break;
    }
    case cab::v1::MASK_FORMAT_FLEX: {
      const cab::FlexMask flex = cab::ToFlex(m);
      EncodeInt32({b, h, r}, flex.kv_num_blocks.data(), out->mutable_kv_num_blocks());
      EncodeInt32({b, h, r, flex.max_k}, flex.kv_indices.data(), out->mutable_kv_indices());
      break;
    }
    default:
      EncodeInt64({static_cast<int64_t>(m.row_offsets.size())}, m.row_offsets.data(), out->mutable_row_offsets());
      EncodeInt32({m.kept()}, m.col_indices.data(), out->mutable_col_indices());
      break;
  }
  return absl::OkStatus();
}

absl::StatusOr<cab::BlockMask> DecodeMask(const cab::v1::BlockMask& p) {
  for (auto [v, f] : {std::pair<int64_t, const char*>{p.batch(), "batch"}, {p.heads(), "heads"},
                      {p.row_begin(), "row_begin"}, {p.rows(), "rows"}, {p.cols(), "cols"}}) {
    if (auto s = CheckDim(v, f); !s.ok()) return s;
  }
  const int64_t b = p.batch(), h = p.heads(), r = p.rows();
  if (b * h * r > kMaxTensorElements / 64) {
    return absl::InvalidArgumentError("mask: batch * heads * rows is too large");
  }
  auto format = ResolveFormat(p.format(), "mask.format");
  if (!format.ok()) return format.status();
  switch (*format) {
    case cab::v1::MASK_FORMAT_BITMAP: {
      cab::BitmapMask bm;
      bm.batch = p.batch(), bm.heads = p.heads(), bm.row_begin = p.row_begin(), bm.rows = p.rows(), bm.cols = p.cols();
      auto bits = DecodeUint8(p.bitmap(), {b, h, r, bm.RowBytes()}, "mask.bitmap");
      if (!bits.ok()) return bits.status();
      bm.bits = std::move(*bits);
      return cab::FromBitmap(bm);
    }
    case cab::v1::MASK_FORMAT_FLEX: {
      cab::FlexMask fm;
      fm.batch = p.batch(), fm.heads = p.heads(), fm.row_begin = p.row_begin(), fm.rows = p.rows(), fm.cols = p.cols();
      if (p.kv_indices().shape_size() != 4) {
        return absl::InvalidArgumentError(absl::StrCat("mask.kv_indices.shape: expected 4 dimensions, got ",
                                                       p.kv_indices().shape_size()));
      }
      const int64_t max_k = p.kv_indices().shape(3);
      if (max_k < 0 || max_k > std::max<int64_t>(p.cols(), 0)) {
        return absl::InvalidArgumentError(absl::StrCat("mask.kv_indices.shape[3]: ", max_k, " is outside [0, cols]"));
      }
      fm.max_k = static_cast<int>(max_k);
      auto num = DecodeInt32(p.kv_num_blocks(), {b, h, r}, "mask.kv_num_blocks");
      if (!num.ok()) return num.status();
      auto idx = DecodeInt32(p.kv_indices(), {b, h, r, max_k}, "mask.kv_indices");
      if (!idx.ok()) return idx.status();
      for (size_t i = 0; i < num->size(); ++i) {
        if ((*num)[i] < 0 || (*num)[i] > max_k) {
          return absl::InvalidArgumentError(absl::StrCat("mask.kv_num_blocks[", i, "]: ", (*num)[i],
                                                         " is outside [0, ", max_k, "]"));
        }
      }
      fm.kv_num_blocks = std::move(*num);
      fm.kv_indices = std::move(*idx);
      return cab::FromFlex(fm);
    }
    default: {
      cab::BlockMask m;
      m.batch = p.batch(), m.heads = p.heads(), m.row_begin = p.row_begin(), m.rows = p.rows(), m.cols = p.cols();
      auto offsets = DecodeInt64(p.row_offsets(), {b * h * r + 1}, "mask.row_offsets");
      if (!offsets.ok()) return offsets.status();
      auto cols = DecodeInt32(p.col_indices(), {}, "mask.col_indices");
      if (!cols.ok()) return cols.status();
      if (p.col_indices().shape_size() != 1) {
        return absl::InvalidArgumentError("mask.col_indices.shape: expected 1 dimension");
      }
      m.row_offsets = std::move(*offsets);
      m.col_indices = std::move(*cols);
      if (m.row_offsets.front() != 0 || m.row_offsets.back() != m.kept()) {
        return absl::InvalidArgumentError(absl::StrCat("mask.row_offsets: must start at 0 and end at ", m.kept(),
                                                       " (the number of col_indices)"));
      }
      if (auto s = m.Check(false); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("mask: ", s.message()));
      }
      return m;
    }
  }
}

}  // namespace cab::wire
