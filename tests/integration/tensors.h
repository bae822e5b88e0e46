// Test inputs: seeded random Q/K held as fp32 host values, encoded onto the wire in any dtype
// (independently of cab_wire), sliced into chunks, and reduced to block representatives naively.
#pragma once

#include <cstdint>
#include <vector>

#include "cab/tensor.h"
#include "cab/v1/cab.pb.h"

namespace cab_it {

// Row-major [B, H, N, D] (or any shape) fp32 values.
struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// Normal(0, 1) entries times a per-token scale in [0.5, 2) so block norms differ clearly.
HostTensor RandomTokens(const std::vector<int64_t>& shape, uint64_t seed);

cab::v1::DType WireDType(cab::DType d);
// Encodes as raw little-endian bytes of dtype `d` (fp16 / bf16 rounded to nearest even).
cab::v1::Tensor ToWire(const HostTensor& t, cab::DType d);
// Values as the server sees them after the dtype round trip.
HostTensor RoundTrip(const HostTensor& t, cab::DType d);
// A view over the proto's bytes (float dtypes only); valid while `t` lives.
cab::TensorView ViewOf(const cab::v1::Tensor& t);

// Tokens [start, start + n) along dim 2 of a [B, H, N, D] tensor.
HostTensor SliceTokens(const HostTensor& x, int64_t start, int64_t n);

// Naive SPEC 1 on [B, H, N, D]: per block the token of largest L2 norm (ties: lowest index) and the
// channel-wise min / max. Each [B, H, M, D].
struct NaiveReps {
  HostTensor maxl2, kmin, kmax;
};
NaiveReps NaiveRepresentatives(const HostTensor& x, int block_size);

}  // namespace cab_it
