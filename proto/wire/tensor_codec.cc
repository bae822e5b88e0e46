#include "wire/tensor_codec.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cab::wire {
namespace {

std::vector<int64_t> ShapeOf(const cab::v1::Tensor& t) { return {t.shape().begin(), t.shape().end()}; }

void SetShape(const std::vector<int64_t>& shape, cab::v1::Tensor* out) {
  out->clear_shape();
  for (int64_t d : shape) out->add_shape(d);
}

int64_t NumelUnchecked(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Checks dtype, shape (against `want` when non-empty) and byte count of an output tensor.
absl::StatusOr<int64_t> CheckOutput(const cab::v1::Tensor& t, cab::v1::DType dtype, const std::vector<int64_t>& want,
                                    absl::string_view field) {
  if (t.dtype() != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".dtype: expected ", cab::v1::DType_Name(dtype), ", got ",
                                                   cab::v1::DType_IsValid(t.dtype()) ? cab::v1::DType_Name(t.dtype())
                                                                                    : absl::StrCat(t.dtype())));
  }
  const std::vector<int64_t> shape = ShapeOf(t);
  if (!want.empty() && shape != want) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".shape: expected [", absl::StrJoin(want, ", "), "], got [",
                                                   absl::StrJoin(shape, ", "), "]"));
  }
  // Output tensors may be empty (a mask with no kept blocks has zero column indices).
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0 || shape[i] > kMaxTensorElements) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".shape[", i, "]: ", shape[i], " is out of range"));
    }
    if (shape[i] != 0 && n > kMaxTensorElements / shape[i]) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".shape: element count overflows"));
    }
    n *= shape[i];
  }
  const int64_t bytes = n * WireDTypeSize(dtype);
  if (static_cast<int64_t>(t.data().size()) != bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".data: ", t.data().size(), " bytes, shape [",
                                                   absl::StrJoin(shape, ", "), "] needs ", bytes));
  }
  return n;
}

template <typename T>
absl::StatusOr<std::vector<T>> DecodePod(const cab::v1::Tensor& t, cab::v1::DType dtype,
                                         const std::vector<int64_t>& shape, absl::string_view field) {
  auto n = CheckOutput(t, dtype, shape, field);
  if (!n.ok()) return n.status();
  std::vector<T> out(static_cast<size_t>(*n));
  if (*n > 0) std::memcpy(out.data(), t.data().data(), static_cast<size_t>(*n) * sizeof(T));
  return out;
}

template <typename T>
void EncodePod(cab::v1::DType dtype, const std::vector<int64_t>& shape, const T* data, cab::v1::Tensor* out) {
  out->set_dtype(dtype);
  SetShape(shape, out);
  const int64_t n = NumelUnchecked(shape);
  out->set_data(n > 0 ? std::string(reinterpret_cast<const char*>(data), static_cast<size_t>(n) * sizeof(T))
                      : std::string());
}

}  // namespace

absl::StatusOr<cab::DType> FromProtoDType(cab::v1::DType dtype, absl::string_view field) {
  switch (dtype) {
    case cab::v1::DTYPE_FP32: return cab::DType::kF32;
    case cab::v1::DTYPE_FP16: return cab::DType::kF16;
    case cab::v1::DTYPE_BF16: return cab::DType::kBF16;
    case cab::v1::DTYPE_UNSPECIFIED:
      return absl::InvalidArgumentError(absl::StrCat(field, ": dtype is unset (DTYPE_FP32, DTYPE_FP16 or DTYPE_BF16)"));
    default:
      break;
  }
  const std::string name = cab::v1::DType_IsValid(dtype) ? cab::v1::DType_Name(dtype) : absl::StrCat(dtype);
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": dtype ", name, " is not an input dtype (DTYPE_FP32, DTYPE_FP16 or DTYPE_BF16)"));
}

cab::v1::DType ToProtoDType(cab::DType dtype) {
  switch (dtype) {
    case cab::DType::kF32: return cab::v1::DTYPE_FP32;
    case cab::DType::kF16: return cab::v1::DTYPE_FP16;
    case cab::DType::kBF16: return cab::v1::DTYPE_BF16;
  }
  return cab::v1::DTYPE_UNSPECIFIED;
}

int64_t WireDTypeSize(cab::v1::DType dtype) {
  switch (dtype) {
    case cab::v1::DTYPE_FP32: return 4;
    case cab::v1::DTYPE_FP16: return 2;
    case cab::v1::DTYPE_BF16: return 2;
    case cab::v1::DTYPE_INT32: return 4;
    case cab::v1::DTYPE_INT64: return 8;
    case cab::v1::DTYPE_UINT8: return 1;
    default: return 0;
  }
}

bool IsPresent(const cab::v1::Tensor& t) {
  return t.dtype() != cab::v1::DTYPE_UNSPECIFIED || t.shape_size() > 0 || !t.data().empty();
}

absl::StatusOr<int64_t> CheckedNumel(const std::vector<int64_t>& shape, absl::string_view field) {
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t d = shape[i];
    if (d <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".shape[", i, "]: ", d, " must be > 0"));
    }
    if (d > kMaxTensorElements || n > kMaxTensorElements / d) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".shape: [", absl::StrJoin(shape, ", "),
                                                     "] has more than 2^40 elements"));
    }
    n *= d;
  }
  return n;
}

absl::StatusOr<cab::TensorView> ViewTensor(const cab::v1::Tensor& t, int rank, absl::string_view field) {
  if (!IsPresent(t)) return absl::InvalidArgumentError(absl::StrCat(field, ": missing"));
  auto dtype = FromProtoDType(t.dtype(), absl::StrCat(field, ".dtype"));
  if (!dtype.ok()) return dtype.status();
  std::vector<int64_t> shape = ShapeOf(t);
  if (shape.empty() || (rank >= 0 && static_cast<int>(shape.size()) != rank)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".shape: expected ", rank >= 0 ? absl::StrCat(rank) : "at least 1",
                                                   " dimensions, got ", shape.size(), " [",
                                                   absl::StrJoin(shape, ", "), "]"));
  }
  auto numel = CheckedNumel(shape, field);
  if (!numel.ok()) return numel.status();
  const int64_t bytes = *numel * static_cast<int64_t>(cab::DTypeSize(*dtype));
  if (static_cast<int64_t>(t.data().size()) != bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".data: ", t.data().size(), " bytes, but shape [",
                                                   absl::StrJoin(shape, ", "), "] of ", cab::DTypeName(*dtype),
                                                   " needs ", bytes));
  }
  cab::TensorView view;
  view.data = t.data().data();
  view.dtype = *dtype;
  view.shape = std::move(shape);
  return view;
}

void EncodeFloat(cab::DType dtype, const std::vector<int64_t>& shape, const float* data, cab::v1::Tensor* out) {
  out->set_dtype(ToProtoDType(dtype));
  SetShape(shape, out);
  const int64_t n = NumelUnchecked(shape);
  std::string bytes(static_cast<size_t>(n) * cab::DTypeSize(dtype), '\0');
  if (dtype == cab::DType::kF32) {
    if (n > 0) std::memcpy(bytes.data(), data, bytes.size());
  } else {
    uint16_t* p = reinterpret_cast<uint16_t*>(bytes.data());
    for (int64_t i = 0; i < n; ++i) {
      p[i] = dtype == cab::DType::kF16 ? cab::FloatToHalf(data[i]) : cab::FloatToBF16(data[i]);
    }
  }
  out->set_data(std::move(bytes));
}

void EncodeView(const cab::TensorView& view, cab::v1::Tensor* out) {
  out->set_dtype(ToProtoDType(view.dtype));
  SetShape(view.shape, out);
  out->set_data(std::string(static_cast<const char*>(view.data), view.nbytes()));
}

void EncodeInt32(const std::vector<int64_t>& shape, const int32_t* data, cab::v1::Tensor* out) {
  EncodePod(cab::v1::DTYPE_INT32, shape, data, out);
}
void EncodeInt64(const std::vector<int64_t>& shape, const int64_t* data, cab::v1::Tensor* out) {
  EncodePod(cab::v1::DTYPE_INT64, shape, data, out);
}
void EncodeUint8(const std::vector<int64_t>& shape, const uint8_t* data, cab::v1::Tensor* out) {
  EncodePod(cab::v1::DTYPE_UINT8, shape, data, out);
}

absl::StatusOr<std::vector<int32_t>> DecodeInt32(const cab::v1::Tensor& t, const std::vector<int64_t>& shape,
                                                 absl::string_view field) {
  return DecodePod<int32_t>(t, cab::v1::DTYPE_INT32, shape, field);
}
absl::StatusOr<std::vector<int64_t>> DecodeInt64(const cab::v1::Tensor& t, const std::vector<int64_t>& shape,
                                                 absl::string_view field) {
  return DecodePod<int64_t>(t, cab::v1::DTYPE_INT64, shape, field);
}
absl::StatusOr<std::vector<uint8_t>> DecodeUint8(const cab::v1::Tensor& t, const std::vector<int64_t>& shape,
                                                 absl::string_view field) {
  return DecodePod<uint8_t>(t, cab::v1::DTYPE_UINT8, shape, field);
}

absl::StatusOr<cab::FloatTensor> DecodeFloat(const cab::v1::Tensor& t, absl::string_view field) {
  auto view = ViewTensor(t, -1, field);
  if (!view.ok()) return view.status();
  cab::FloatTensor out;
  out.shape = view->shape;
  out.data.resize(static_cast<size_t>(view->numel()));
  cab::ToFloat(*view, 0, view->numel(), out.data.data());
  return out;
}

}  // namespace cab::wire
