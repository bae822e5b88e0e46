// Eviction kernels (see evict_kernels.h). Arithmetic that must equal the CPU backend's (group means,
// key norms) is written with explicit round-to-nearest intrinsics, so no multiply-add contraction
// changes a bit; the sort keys then reproduce the CPU picker's order exactly.
#include "evict_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cub/device/device_segmented_radix_sort.cuh>

#include "cuda_status.h"

namespace cab::cuda {
namespace {

constexpr int kThreads = 256;

int Grid(int64_t n) { return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20)); }

#define CAB_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// Descending-order key of a value: smaller for larger values; NaN ranks as -inf and -0 as +0 (the
// CPU compares floats, where -0 == +0).
__device__ __forceinline__ uint32_t DescKey(float v) {
  if (v != v) v = -__int_as_float(0x7f800000);
  if (v == 0.f) v = 0.f;
  const uint32_t u = __float_as_uint(v);
  const uint32_t asc = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ~asc;
}

__device__ __forceinline__ uint32_t AscKey(float v) {
  if (v == 0.f) v = 0.f;
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

template <typename T>
__global__ void ToFloatKernel(const T* x, int64_t n, float* out) {
  CAB_GRID_STRIDE(i, n) {
    if constexpr (std::is_same_v<T, float>) out[i] = x[i];
    else if constexpr (std::is_same_v<T, __half>) out[i] = __half2float(x[i]);
    else out[i] = __bfloat162float(x[i]);
  }
}

__global__ void GroupMeanKernel(const float* scores, int heads, int group, int64_t n, float* out) {
  CAB_GRID_STRIDE(i, heads * n) {
    const int64_t h = i / n, t = i % n;
    double s = 0;
    for (int r = 0; r < group; ++r) s = __dadd_rn(s, static_cast<double>(scores[(h * group + r) * n + t]));
    out[i] = static_cast<float>(__ddiv_rn(s, static_cast<double>(group)));
  }
}

__global__ void RowNormsKernel(const float* x, int64_t rows, int dim, float* out) {
  CAB_GRID_STRIDE(r, rows) {
    const float* v = x + r * dim;
    double s = 0;
    for (int d = 0; d < dim; ++d) {
      const double e = static_cast<double>(v[d]);
      s = __dadd_rn(s, __dmul_rn(e, e));
    }
    out[r] = static_cast<float>(__dsqrt_rn(s));
  }
}

__global__ void TopKeysKernel(const float* value, int heads, int64_t n, int64_t recent_from, int64_t candidates_end,
                              uint64_t* keys) {
  CAB_GRID_STRIDE(i, heads * n) {
    const int64_t t = i % n;
    uint64_t k = kNeverKey;
    if (t >= recent_from) k = static_cast<uint64_t>(t);
    else if (t < candidates_end) k = (uint64_t{1} << 63) | (static_cast<uint64_t>(DescKey(value[i])) << 31) | static_cast<uint64_t>(t);
    keys[i] = k;
  }
}

__global__ void OffsetsKernel(int segments, int64_t len, int* offsets) {
  CAB_GRID_STRIDE(i, segments + 1) offsets[i] = static_cast<int>(i * len);
}

__global__ void TakeFirstKernel(const uint64_t* sorted, const uint32_t* order, int heads, int64_t n, int64_t keep,
                                uint32_t* out) {
  CAB_GRID_STRIDE(i, heads * keep) {
    const int64_t h = i / keep, at = i % keep;
    const uint32_t low = static_cast<uint32_t>(sorted[h * n + at] & 0x7fffffffu);
    out[i] = order ? order[h * n + low] : low;
  }
}

__global__ void StreamingKernel(int heads, int64_t n, int64_t keep, int64_t sinks, uint32_t* out) {
  CAB_GRID_STRIDE(i, heads * keep) {
    const int64_t at = i % keep;
    out[i] = static_cast<uint32_t>(at < sinks ? at : n - (keep - sinks) + (at - sinks));
  }
}

__global__ void RanksKernel(const uint64_t* sorted, int heads, int64_t n, uint32_t* order, uint32_t* rank) {
  CAB_GRID_STRIDE(i, heads * n) {
    const int64_t h = i / n, at = i % n;
    const uint32_t t = static_cast<uint32_t>(sorted[i] & 0x7fffffffu);
    order[i] = t;
    rank[h * n + t] = static_cast<uint32_t>(at);
  }
}

__global__ void BlockKeysKernel(const float* block_min, const int32_t* has_edge, int heads, int blocks, uint64_t* keys) {
  CAB_GRID_STRIDE(i, static_cast<int64_t>(heads) * blocks) {
    const int m = static_cast<int>(i % blocks);
    keys[i] = has_edge[i] ? (static_cast<uint64_t>(AscKey(block_min[i])) << 32 | static_cast<uint64_t>(m)) : kNeverKey;
  }
}

__global__ void BlockRanksKernel(const uint64_t* sorted, int heads, int blocks, int32_t* block_rank) {
  CAB_GRID_STRIDE(i, static_cast<int64_t>(heads) * blocks) {
    const int64_t h = i / blocks, at = i % blocks;
    const uint64_t k = sorted[i];
    if (k != kNeverKey) block_rank[h * blocks + static_cast<int64_t>(k & 0xffffffffu)] = static_cast<int32_t>(at);
  }
}

__global__ void BridgeKeysKernel(const int32_t* block_rank, const uint32_t* rank, int heads, int64_t n, int blocks,
                                 int block_size, int64_t recent_from, uint64_t* keys) {
  CAB_GRID_STRIDE(i, heads * n) {
    const int64_t h = i / n, t = i % n;
    const int32_t br = block_rank[h * blocks + t / block_size];
    uint64_t k = kNeverKey;
    if (t >= recent_from) k = 0;
    else if (br >= 0) k = (uint64_t{1} << 62) | (static_cast<uint64_t>(br) << 31) | rank[i];
    keys[i] = k;
  }
}

__global__ void MarkBridgesKernel(const uint64_t* sorted, const uint32_t* order, int heads, int64_t n, int64_t recent,
                                  int64_t bridges, uint8_t* taken) {
  CAB_GRID_STRIDE(i, heads * bridges) {
    const int64_t h = i / bridges, at = recent + i % bridges;
    const uint64_t k = sorted[h * n + at];
    if (k != kNeverKey) taken[h * n + order[h * n + (k & 0x7fffffffu)]] = 1;
  }
}

__global__ void FinalKeysKernel(const uint32_t* rank, int heads, int64_t n, int64_t recent, const uint8_t* taken,
                                uint64_t* keys) {
  CAB_GRID_STRIDE(i, heads * n) {
    const int64_t t = i % n;
    const bool kept = t >= n - recent || taken[i];
    keys[i] = (static_cast<uint64_t>(kept ? 0 : 1) << 32) | rank[i];
  }
}

// One block per query row: max in float, then the sum of exp(l - max) in double.
__global__ void RowSoftmaxStatsKernel(const float* logits, int64_t n, float* row_max, double* row_sum) {
  __shared__ float fmax_s[kThreads / 32];
  __shared__ double sum_s[kThreads / 32];
  const float* row = logits + blockIdx.x * n;
  float m = -__int_as_float(0x7f800000);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, row[j]);
  for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  if (threadIdx.x % 32 == 0) fmax_s[threadIdx.x / 32] = m;
  __syncthreads();
  m = fmax_s[0];
  for (int w = 1; w < kThreads / 32; ++w) m = fmaxf(m, fmax_s[w]);
  double s = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += exp(static_cast<double>(row[j]) - m);
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (threadIdx.x % 32 == 0) sum_s[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double all = 0;
    for (int w = 0; w < kThreads / 32; ++w) all += sum_s[w];
    row_max[blockIdx.x] = m;
    row_sum[blockIdx.x] = all;
  }
}

// One thread per key column, over the query rows in order (coalesced across the columns).
__global__ void AccumulateVotesKernel(const float* logits, int64_t rows, int64_t n, const float* row_max,
                                      const double* row_sum, double* votes) {
  CAB_GRID_STRIDE(j, n) {
    double v = votes[j];
    for (int64_t q = 0; q < rows; ++q) v += exp(static_cast<double>(logits[q * n + j]) - row_max[q]) / row_sum[q];
    votes[j] = v;
  }
}

__global__ void MaxPoolKernel(const double* votes, int heads, int64_t prefix, int half, int64_t out_stride,
                              float* pooled) {
  CAB_GRID_STRIDE(i, heads * prefix) {
    const int64_t h = i / prefix, j = i % prefix;
    const double* v = votes + h * prefix;
    double best = v[j];
    const int64_t lo = j - half < 0 ? 0 : j - half, hi = j + half > prefix - 1 ? prefix - 1 : j + half;
    for (int64_t t = lo; t <= hi; ++t) best = fmax(best, v[t]);
    pooled[h * out_stride + j] = static_cast<float>(best);
  }
}

__global__ void AnyNonFiniteKernel(const float* x, int64_t n, int* flag) {
  CAB_GRID_STRIDE(i, n) {
    if (!isfinite(x[i])) *flag = 1;
  }
}

template <typename K>
absl::Status SortSegments(const K* in, K* out, int segments, int64_t len, int end_bit, DeviceBuffer& temp,
                          DeviceBuffer& offsets, cudaStream_t stream) {
  const int64_t total = segments * len;
  if (total > (int64_t{1} << 31) - 1) return absl::InvalidArgumentError("eviction: more than 2^31 sort keys");
  if (total == 0) return absl::OkStatus();
  CAB_RETURN_IF_ERROR(offsets.Reserve((segments + 1) * sizeof(int)));
  OffsetsKernel<<<Grid(segments + 1), kThreads, 0, stream>>>(segments, len, offsets.as<int>());
  CAB_CUDA_LAUNCHED("segment offsets");
  size_t bytes = 0;
  const int* off = offsets.as<int>();
  CAB_CUDA_RETURN(cub::DeviceSegmentedRadixSort::SortKeys(nullptr, bytes, in, out, static_cast<int>(total), segments,
                                                          off, off + 1, 0, end_bit, stream));
  CAB_RETURN_IF_ERROR(temp.Reserve(std::max<size_t>(bytes, 1)));
  CAB_CUDA_RETURN(cub::DeviceSegmentedRadixSort::SortKeys(temp.as<void>(), bytes, in, out, static_cast<int>(total),
                                                          segments, off, off + 1, 0, end_bit, stream));
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchToFloat(const void* x, DType dtype, int64_t count, float* out, cudaStream_t stream) {
  if (count == 0) return absl::OkStatus();
  switch (dtype) {
    case DType::kF32: ToFloatKernel<<<Grid(count), kThreads, 0, stream>>>(static_cast<const float*>(x), count, out); break;
    case DType::kF16: ToFloatKernel<<<Grid(count), kThreads, 0, stream>>>(static_cast<const __half*>(x), count, out); break;
    case DType::kBF16:
      ToFloatKernel<<<Grid(count), kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(x), count, out);
      break;
    default: return absl::InvalidArgumentError("dtype: unsupported for eviction");
  }
  CAB_CUDA_LAUNCHED("to float");
  return absl::OkStatus();
}

absl::Status LaunchGroupMean(const float* scores, int heads, int group, int64_t n, float* out, cudaStream_t stream) {
  GroupMeanKernel<<<Grid(heads * n), kThreads, 0, stream>>>(scores, heads, group, n, out);
  CAB_CUDA_LAUNCHED("group mean");
  return absl::OkStatus();
}

absl::Status LaunchRowNorms(const float* x, int64_t rows, int dim, float* out, cudaStream_t stream) {
  RowNormsKernel<<<Grid(rows), kThreads, 0, stream>>>(x, rows, dim, out);
  CAB_CUDA_LAUNCHED("row norms");
  return absl::OkStatus();
}

absl::Status LaunchTopKeys(const float* value, int heads, int64_t n, int64_t recent_from, int64_t candidates_end,
                           uint64_t* keys, cudaStream_t stream) {
  TopKeysKernel<<<Grid(heads * n), kThreads, 0, stream>>>(value, heads, n, recent_from, candidates_end, keys);
  CAB_CUDA_LAUNCHED("top keys");
  return absl::OkStatus();
}

absl::Status SortSegments64(const uint64_t* in, uint64_t* out, int segments, int64_t len, int end_bit,
                            DeviceBuffer& temp, DeviceBuffer& offsets, cudaStream_t stream) {
  return SortSegments(in, out, segments, len, end_bit, temp, offsets, stream);
}

absl::Status SortSegments32(const uint32_t* in, uint32_t* out, int segments, int64_t len, int end_bit,
                            DeviceBuffer& temp, DeviceBuffer& offsets, cudaStream_t stream) {
  return SortSegments(in, out, segments, len, end_bit, temp, offsets, stream);
}

absl::Status LaunchTakeFirst(const uint64_t* sorted, const uint32_t* order, int heads, int64_t n, int64_t keep,
                             uint32_t* out, cudaStream_t stream) {
  if (keep == 0) return absl::OkStatus();
  TakeFirstKernel<<<Grid(heads * keep), kThreads, 0, stream>>>(sorted, order, heads, n, keep, out);
  CAB_CUDA_LAUNCHED("take first");
  return absl::OkStatus();
}

absl::Status LaunchStreaming(int heads, int64_t n, int64_t keep, int64_t sinks, uint32_t* out, cudaStream_t stream) {
  if (keep == 0) return absl::OkStatus();
  StreamingKernel<<<Grid(heads * keep), kThreads, 0, stream>>>(heads, n, keep, sinks, out);
  CAB_CUDA_LAUNCHED("streaming");
  return absl::OkStatus();
}

absl::Status LaunchRanks(const uint64_t* sorted, int heads, int64_t n, uint32_t* order, uint32_t* rank,
                         cudaStream_t stream) {
  RanksKernel<<<Grid(heads * n), kThreads, 0, stream>>>(sorted, heads, n, order, rank);
  CAB_CUDA_LAUNCHED("ranks");
  return absl::OkStatus();
}

absl::Status LaunchBlockKeys(const float* block_min, const int32_t* has_edge, int heads, int blocks, uint64_t* keys,
                             cudaStream_t stream) {
  BlockKeysKernel<<<Grid(static_cast<int64_t>(heads) * blocks), kThreads, 0, stream>>>(block_min, has_edge, heads,
                                                                                      blocks, keys);
  CAB_CUDA_LAUNCHED("block keys");
  return absl::OkStatus();
}

absl::Status LaunchBlockRanks(const uint64_t* sorted, int heads, int blocks, int32_t* block_rank, cudaStream_t stream) {
  CAB_CUDA_RETURN(cudaMemsetAsync(block_rank, 0xff, static_cast<size_t>(heads) * blocks * sizeof(int32_t), stream));
  BlockRanksKernel<<<Grid(static_cast<int64_t>(heads) * blocks), kThreads, 0, stream>>>(sorted, heads, blocks,
                                                                                       block_rank);
  CAB_CUDA_LAUNCHED("block ranks");
  return absl::OkStatus();
}

absl::Status LaunchBridgeKeys(const int32_t* block_rank, const uint32_t* rank, int heads, int64_t n, int block_size,
                              int64_t recent_from, uint64_t* keys, cudaStream_t stream) {
  const int blocks = static_cast<int>((n + block_size - 1) / block_size);
  BridgeKeysKernel<<<Grid(heads * n), kThreads, 0, stream>>>(block_rank, rank, heads, n, blocks, block_size,
                                                             recent_from, keys);
  CAB_CUDA_LAUNCHED("bridge keys");
  return absl::OkStatus();
}

absl::Status LaunchFinalKeys(const uint64_t* sorted_bridges, const uint32_t* order, const uint32_t* rank, int heads,
                             int64_t n, int64_t recent, int64_t bridges, uint8_t* taken, uint64_t* keys,
                             cudaStream_t stream) {
  CAB_CUDA_RETURN(cudaMemsetAsync(taken, 0, static_cast<size_t>(heads) * n, stream));
  if (bridges > 0) {
    MarkBridgesKernel<<<Grid(heads * bridges), kThreads, 0, stream>>>(sorted_bridges, order, heads, n, recent, bridges,
                                                                      taken);
    CAB_CUDA_LAUNCHED("mark bridges");
  }
  FinalKeysKernel<<<Grid(heads * n), kThreads, 0, stream>>>(rank, heads, n, recent, taken, keys);
  CAB_CUDA_LAUNCHED("final keys");
  return absl::OkStatus();
}

absl::Status LaunchRowSoftmaxStats(const float* logits, int64_t rows, int64_t n, float* row_max, double* row_sum,
                                   cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  RowSoftmaxStatsKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, n, row_max, row_sum);
  CAB_CUDA_LAUNCHED("row softmax stats");
  return absl::OkStatus();
}

absl::Status LaunchAccumulateVotes(const float* logits, int64_t rows, int64_t n, const float* row_max,
                                   const double* row_sum, double* votes, cudaStream_t stream) {
  AccumulateVotesKernel<<<Grid(n), kThreads, 0, stream>>>(logits, rows, n, row_max, row_sum, votes);
  CAB_CUDA_LAUNCHED("accumulate votes");
  return absl::OkStatus();
}

absl::Status LaunchMaxPool(const double* votes, int heads, int64_t prefix, int half, int64_t out_stride,
                           float* pooled, cudaStream_t stream) {
  if (prefix <= 0) return absl::OkStatus();
  MaxPoolKernel<<<Grid(heads * prefix), kThreads, 0, stream>>>(votes, heads, prefix, half, out_stride, pooled);
  CAB_CUDA_LAUNCHED("max pool");
  return absl::OkStatus();
}

absl::Status LaunchAnyNonFinite(const float* x, int64_t n, int* flag, cudaStream_t stream) {
  CAB_CUDA_RETURN(cudaMemsetAsync(flag, 0, sizeof(int), stream));
  if (n == 0) return absl::OkStatus();
  AnyNonFiniteKernel<<<Grid(n), kThreads, 0, stream>>>(x, n, flag);
  CAB_CUDA_LAUNCHED("any non-finite");
  return absl::OkStatus();
}

}  // namespace cab::cuda
