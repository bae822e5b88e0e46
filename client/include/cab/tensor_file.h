// Readers of the tensor files cab-client accepts: NumPy .npy (format v1/v2/v3, little-endian
// '<f4', '<f2', and '<u2' read as bfloat16 when asked) and .safetensors (F32, F16, BF16).
// Parsers take the file's bytes so that tests feed them directly; errors are INVALID_ARGUMENT
// naming the file part that is wrong.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/tensor.h"

namespace cab {

// A tensor that owns its bytes (row-major, little-endian).
struct OwnedTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string bytes;
  TensorView view() const { return TensorView{bytes.data(), dtype, shape}; }
};

struct NpyOptions {
  bool u2_as_bf16 = false;  // NumPy has no bfloat16: such arrays are saved as '<u2' bit patterns
};

absl::StatusOr<OwnedTensor> ParseNpy(std::string_view contents, const NpyOptions& options = {});
absl::StatusOr<std::map<std::string, OwnedTensor>> ParseSafetensors(std::string_view contents);

// Writers (for tests and for users preparing inputs).
std::string WriteNpy(const OwnedTensor& t);  // '<f4', '<f2' or '<u2' (bf16), format v1
std::string WriteSafetensors(const std::map<std::string, OwnedTensor>& tensors);

absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// q and k from `spec`: "FILE.safetensors" (tensors named "q" and "k") or "Q.npy,K.npy".
struct QkTensors {
  OwnedTensor q, k;
};
absl::StatusOr<QkTensors> LoadQk(const std::string& spec, const NpyOptions& options = {});

}  // namespace cab
