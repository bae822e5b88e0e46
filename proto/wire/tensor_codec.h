// Tensor codec: cab.v1.Tensor (dtype + shape + raw little-endian bytes) <-> cab::TensorView.
// Decoding validates everything a client controls (dtype, rank, each dimension, the shape product
// against overflow, the byte count) and names the field in every error, so the server can return
// the status verbatim as INVALID_ARGUMENT. The host is assumed little-endian (x86-64, aarch64).
#pragma once

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "cab/tensor.h"
#include "cab/v1/cab.pb.h"

namespace cab::wire {

// Largest element count a decoded tensor may claim (2^40): far above any real request, low enough
// that numel * 8 bytes never overflows int64.
inline constexpr int64_t kMaxTensorElements = int64_t{1} << 40;

// Input dtypes (fp32, fp16, bf16). DTYPE_UNSPECIFIED and the output-only integer dtypes are
// INVALID_ARGUMENT naming `field`.
absl::StatusOr<cab::DType> FromProtoDType(cab::v1::DType dtype, absl::string_view field);
cab::v1::DType ToProtoDType(cab::DType dtype);
// Bytes per element of any wire dtype (0 for DTYPE_UNSPECIFIED or unknown values).
int64_t WireDTypeSize(cab::v1::DType dtype);

// True when the client set the tensor at all (a dtype, a shape or bytes); absent tensors are all empty.
bool IsPresent(const cab::v1::Tensor& t);

// prod(shape) with each dimension > 0 and the product <= kMaxTensorElements; errors name `field`.
absl::StatusOr<int64_t> CheckedNumel(const std::vector<int64_t>& shape, absl::string_view field);

// Views an input tensor (fp32/fp16/bf16) of rank `rank` (-1: any rank >= 1). The view points into
// `t`'s bytes: keep `t` alive while the view is used.
absl::StatusOr<cab::TensorView> ViewTensor(const cab::v1::Tensor& t, int rank, absl::string_view field);

// Encoders. EncodeFloat converts `data` (numel(shape) floats) to `dtype` (round to nearest even).
void EncodeFloat(cab::DType dtype, const std::vector<int64_t>& shape, const float* data, cab::v1::Tensor* out);
// Copies a view's bytes as they are (its dtype and shape).
void EncodeView(const cab::TensorView& view, cab::v1::Tensor* out);
void EncodeInt32(const std::vector<int64_t>& shape, const int32_t* data, cab::v1::Tensor* out);
void EncodeInt64(const std::vector<int64_t>& shape, const int64_t* data, cab::v1::Tensor* out);
void EncodeUint8(const std::vector<int64_t>& shape, const uint8_t* data, cab::v1::Tensor* out);

// Decoders of output tensors (for clients): check the dtype, that the shape equals `shape`
// (when `shape` is non-empty) and the byte count; errors name `field`.
absl::StatusOr<std::vector<int32_t>> DecodeInt32(const cab::v1::Tensor& t, const std::vector<int64_t>& shape,
                                                 absl::string_view field);
absl::StatusOr<std::vector<int64_t>> DecodeInt64(const cab::v1::Tensor& t, const std::vector<int64_t>& shape,
                                                 absl::string_view field);
absl::StatusOr<std::vector<uint8_t>> DecodeUint8(const cab::v1::Tensor& t, const std::vector<int64_t>& shape,
                                                 absl::string_view field);
// Any input dtype widened to float (for clients and tests).
absl::StatusOr<cab::FloatTensor> DecodeFloat(const cab::v1::Tensor& t, absl::string_view field);

}  // namespace cab::wire
