// Tensors as the service sees them: a dtype, a shape and raw little-endian bytes.
// Views never own memory; the caller keeps the bytes alive for the duration of a call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cab {

enum class DType { kF32 = 0, kF16 = 1, kBF16 = 2 };

size_t DTypeSize(DType dtype);
std::string DTypeName(DType dtype);
absl::StatusOr<DType> ParseDType(const std::string& name);  // "fp32"|"float32", "fp16"|"float16", "bf16"|"bfloat16"

// A read-only, contiguous, row-major view.
struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;

  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  // Element i converted to float (fp16 and bf16 are widened exactly).
  float at(int64_t i) const;
};

// Checks that `view` has `rank` dimensions and `byte_count` bytes matching its shape and dtype.
// `what` names the argument in the message (for example "q").
absl::Status CheckTensor(const TensorView& view, int rank, const std::string& what);

// Scalar conversions (round-to-nearest-even on the way down).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BF16ToFloat(uint16_t b);
uint16_t FloatToBF16(float f);

// Copies `count` elements starting at element `offset` of `view` into `out` as floats.
void ToFloat(const TensorView& view, int64_t offset, int64_t count, float* out);

// An owning float tensor, used for intermediate results and tests.
struct FloatTensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  TensorView view() const { return TensorView{data.data(), DType::kF32, shape}; }
};

}  // namespace cab
