#include "mask_decode.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cab_it {
namespace {

absl::Status CheckWireTensor(const cab::v1::Tensor& t, cab::v1::DType dtype, const std::vector<int64_t>& shape,
                             size_t elem, const char* what) {
  if (t.dtype() != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": dtype ", cab::v1::DType_Name(t.dtype()), ", want ",
                                                   cab::v1::DType_Name(dtype)));
  }
  std::vector<int64_t> got(t.shape().begin(), t.shape().end());
  if (got != shape) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": shape [", absl::StrJoin(got, ","), "], want [", absl::StrJoin(shape, ","), "]"));
  }
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  if (t.data().size() != static_cast<size_t>(n) * elem) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", t.data().size(), " bytes for ", n, " elements"));
  }
  return absl::OkStatus();
}

template <typename T>
T Elem(const cab::v1::Tensor& t, int64_t i) {
  T v;
  std::memcpy(&v, t.data().data() + i * sizeof(T), sizeof(T));
  return v;
}

}  // namespace

int64_t DenseMask::kept() const {
  int64_t n = 0;
  for (uint8_t k : keep) n += k;
  return n;
}

absl::StatusOr<DenseMask> DecodeWireMask(const cab::v1::BlockMask& m) {
  DenseMask d;
  d.batch = m.batch();
  d.heads = m.heads();
  d.row_begin = m.row_begin();
  d.rows = m.rows();
  d.cols = m.cols();
  if (d.batch <= 0 || d.heads <= 0 || d.rows < 0 || d.cols <= 0 || d.row_begin < 0 || d.row_begin + d.rows > d.cols) {
    return absl::InvalidArgumentError(absl::StrCat("bad mask header: batch ", d.batch, " heads ", d.heads, " row_begin ",
                                                   d.row_begin, " rows ", d.rows, " cols ", d.cols));
  }
  const int64_t R = static_cast<int64_t>(d.batch) * d.heads * d.rows;
  d.keep.assign(static_cast<size_t>(R * d.cols), 0);
  auto set = [&](int64_t row, int64_t col, int64_t prev) -> absl::Status {
    if (col < 0 || col >= d.cols) return absl::InvalidArgumentError(absl::StrCat("row ", row, ": column ", col, " out of range"));
    if (col <= prev) return absl::InvalidArgumentError(absl::StrCat("row ", row, ": columns not strictly ascending"));
    d.keep[static_cast<size_t>(row * d.cols + col)] = 1;
    return absl::OkStatus();
  };
  switch (m.format()) {
    case cab::v1::MASK_FORMAT_UNSPECIFIED:
    case cab::v1::MASK_FORMAT_BSR: {
      if (auto s = CheckWireTensor(m.row_offsets(), cab::v1::DTYPE_INT64, {R + 1}, 8, "row_offsets"); !s.ok()) return s;
      const int64_t nnz = Elem<int64_t>(m.row_offsets(), R);
      if (auto s = CheckWireTensor(m.col_indices(), cab::v1::DTYPE_INT32, {nnz}, 4, "col_indices"); !s.ok()) return s;
      if (Elem<int64_t>(m.row_offsets(), 0) != 0) return absl::InvalidArgumentError("row_offsets[0] != 0");
      for (int64_t r = 0; r < R; ++r) {
        const int64_t a = Elem<int64_t>(m.row_offsets(), r), b = Elem<int64_t>(m.row_offsets(), r + 1);
        if (b < a || b > nnz) return absl::InvalidArgumentError(absl::StrCat("row_offsets not monotone at ", r));
        int64_t prev = -1;
        for (int64_t i = a; i < b; ++i) {
          const int64_t c = Elem<int32_t>(m.col_indices(), i);
          if (auto s = set(r, c, prev); !s.ok()) return s;
          prev = c;
        }
      }
      break;
    }
    case cab::v1::MASK_FORMAT_BITMAP: {
      const int64_t rb = (d.cols + 7) / 8;
      if (auto s = CheckWireTensor(m.bitmap(), cab::v1::DTYPE_UINT8, {d.batch, d.heads, d.rows, rb}, 1, "bitmap");
          !s.ok()) {
        return s;
      }
      for (int64_t r = 0; r < R; ++r) {
        for (int64_t c = 0; c < rb * 8; ++c) {
          const uint8_t byte = static_cast<uint8_t>(m.bitmap().data()[static_cast<size_t>(r * rb + c / 8)]);
          if (!((byte >> (c % 8)) & 1)) continue;
          if (c >= d.cols) return absl::InvalidArgumentError(absl::StrCat("bitmap row ", r, ": padding bit ", c, " set"));
          d.keep[static_cast<size_t>(r * d.cols + c)] = 1;
        }
      }
      break;
    }
    case cab::v1::MASK_FORMAT_FLEX: {
      if (auto s = CheckWireTensor(m.kv_num_blocks(), cab::v1::DTYPE_INT32, {d.batch, d.heads, d.rows}, 4, "kv_num_blocks");
          !s.ok()) {
        return s;
      }
      if (m.kv_indices().shape_size() != 4) return absl::InvalidArgumentError("kv_indices: rank != 4");
      const int64_t max_k = m.kv_indices().shape(3);
      if (auto s = CheckWireTensor(m.kv_indices(), cab::v1::DTYPE_INT32, {d.batch, d.heads, d.rows, max_k}, 4, "kv_indices");
          !s.ok()) {
        return s;
      }
      for (int64_t r = 0; r < R; ++r) {
        const int64_t n = Elem<int32_t>(m.kv_num_blocks(), r);
        if (n < 0 || n > max_k) return absl::InvalidArgumentError(absl::StrCat("kv_num_blocks[", r, "] = ", n));
        int64_t prev = -1;
        for (int64_t i = 0; i < max_k; ++i) {
          const int64_t c = Elem<int32_t>(m.kv_indices(), r * max_k + i);
          if (i >= n) {
            if (c != 0) return absl::InvalidArgumentError(absl::StrCat("kv_indices row ", r, ": padding not 0"));
            continue;
          }
          if (auto s = set(r, c, prev); !s.ok()) return s;
          prev = c;
        }
      }
      break;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown format ", m.format()));
  }
  return d;
}

DenseMask FromCab(const cab::BlockMask& m) {
  DenseMask d;
  d.batch = m.batch;
  d.heads = m.heads;
  d.row_begin = m.row_begin;
  d.rows = m.rows;
  d.cols = m.cols;
  const int64_t R = static_cast<int64_t>(m.batch) * m.heads * m.rows;
  d.keep.assign(static_cast<size_t>(R * m.cols), 0);
  for (int64_t r = 0; r < R && r + 1 < static_cast<int64_t>(m.row_offsets.size()); ++r) {
    for (int64_t i = m.row_offsets[r]; i < m.row_offsets[r + 1]; ++i) {
      d.keep[static_cast<size_t>(r * m.cols + m.col_indices[i])] = 1;
    }
  }
  return d;
}

std::string MaskDiff(const DenseMask& got, const DenseMask& want) {
  if (got.batch != want.batch || got.heads != want.heads || got.row_begin != want.row_begin || got.rows != want.rows ||
      got.cols != want.cols) {
    return absl::StrCat("header differs: got B", got.batch, " H", got.heads, " row_begin ", got.row_begin, " rows ",
                        got.rows, " cols ", got.cols, "; want B", want.batch, " H", want.heads, " row_begin ",
                        want.row_begin, " rows ", want.rows, " cols ", want.cols);
  }
  std::string out;
  int shown = 0;
  int64_t diffs = 0;
  for (int b = 0; b < got.batch; ++b)
    for (int h = 0; h < got.heads; ++h)
      for (int r = 0; r < got.rows; ++r)
        for (int c = 0; c < got.cols; ++c) {
          if (got.at(b, h, r, c) == want.at(b, h, r, c)) continue;
          ++diffs;
          if (shown++ < 8) {
            absl::StrAppend(&out, " (b", b, " h", h, " row ", got.row_begin + r, " col ", c, ": got ",
                            int(got.at(b, h, r, c)), ")");
          }
        }
  if (diffs == 0) return "";
  return absl::StrCat(diffs, " cells differ:", out);
}

}  // namespace cab_it
