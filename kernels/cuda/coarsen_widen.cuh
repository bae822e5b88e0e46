// Element widening shared by the coarsening kernels: every input dtype is summed, compared and
// screened in fp32 (and re-measured in double from these floats, which are exact).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace cab::cuda {

__device__ __forceinline__ float Widen(float v) { return v; }
__device__ __forceinline__ float Widen(__half v) { return __half2float(v); }
__device__ __forceinline__ float Widen(__nv_bfloat16 v) { return __bfloat162float(v); }

}  // namespace cab::cuda
