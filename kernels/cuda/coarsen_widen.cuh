// Element widening and per-word accumulation shared by the coarsening kernels: every input dtype is
// summed, compared and screened in fp32 (and re-measured in double from these floats, which are exact).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace cab::cuda {

__device__ __forceinline__ float Widen(float v) { return v; }
__device__ __forceinline__ float Widen(__half v) { return __half2float(v); }
__device__ __forceinline__ float Widen(__nv_bfloat16 v) { return __bfloat162float(v); }

// Adds one 16-byte word of a token (VEC elements of this lane's channels) to the running channel
// statistics (kStats = false: leaves them alone); returns the word's partial squared norm (fp32, for
// screening only).
template <typename T, int VEC, bool kStats = true>
__device__ __forceinline__ float Accumulate(const uint4& raw, float (&sum)[VEC], float (&mn)[VEC], float (&mx)[VEC]) {
  const T* ev = reinterpret_cast<const T*>(&raw);
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    const float e = Widen(ev[i]);
    if constexpr (kStats) {
      sum[i] += e;
      mn[i] = fminf(mn[i], e);
      mx[i] = fmaxf(mx[i], e);
    }
    sq = fmaf(e, e, sq);
  }
  return sq;
}

// The squared norms of 4 tokens whose partial sums x[u] are spread over the V lanes of a group, in
// 3 + log2(V / 4) shuffles instead of 4 log2(V): two halving steps exchange only the values the
// partner keeps (a reduce-scatter), then a butterfly. Afterwards each lane holds token u =
// (v & V/4 ? 1 : 0) + (v & V/2 ? 2 : 0), as does every lane with the same two bits. Needs V >= 4.
// The summation order differs from a butterfly per token; these norms only screen (see above).

}  // namespace cab::cuda
