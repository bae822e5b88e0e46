// Synthetic inputs for the CLI and the benchmarks: seeded Gaussian tensors in any dtype.
#pragma once

#include <cstdint>
#include <vector>

#include "cab/tensor_file.h"

namespace cab::cli {

// shape-filled N(0, 1) values (a fixed mt19937_64 stream per seed), stored as `dtype`.
OwnedTensor RandomTensor(const std::vector<int64_t>& shape, DType dtype, uint64_t seed);
// Floats stored as `dtype` (round to nearest even).
OwnedTensor FromFloats(const std::vector<int64_t>& shape, DType dtype, const std::vector<float>& values);

}  // namespace cab::cli
