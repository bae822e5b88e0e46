// Device kernels of KV-cache eviction (SPEC 4). Every policy is reduced to one 64-bit priority key
// per token (lower = kept first): a segmented radix sort per (batch, kv head) orders the keys, the
// first `keep` are the kept tokens, and a second sort puts their indices in ascending order. Keys are
// built so that the order is exactly the CPU picker's (kernels/cpu/evict_head.cc): recent tokens
// first, then candidates by descending value (NaN as -inf, -0 as +0) with ties to the lower index.
//
// Layouts (device): H = B * Hkv segments of N tokens; values [H, N] float; keys [H, N] uint64.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "cab/tensor.h"
#include "device_buffers.h"

namespace cab::cuda {

constexpr uint64_t kNeverKey = ~uint64_t{0};  // a token that is never kept (sorts last)

// Widens `count` elements of `dtype` to float.
absl::Status LaunchToFloat(const void* x, DType dtype, int64_t count, float* out, cudaStream_t stream);

// out[h, t] = float(sum_r double(scores[h * group + r, t]) / group): the CPU's group mean, same order.
absl::Status LaunchGroupMean(const float* scores, int heads, int group, int64_t n, float* out, cudaStream_t stream);

// out[row] = float(sqrt(sum_d double(x[row, d])^2)) summed in d order without contraction (the CPU's).
absl::Status LaunchRowNorms(const float* x, int64_t rows, int dim, float* out, cudaStream_t stream);

// key(t) = t                                      for t >= recent_from (kept first, in any order)
//        = 1 << 63 | desc(value[t]) << 31 | t     for t <  candidates_end
//        = kNeverKey                              otherwise.
// Token indices must be < 2^31 (checked by the caller).
absl::Status LaunchTopKeys(const float* value, int heads, int64_t n, int64_t recent_from, int64_t candidates_end,
                           uint64_t* keys, cudaStream_t stream);

// Sorts each of `segments` runs of `len` keys ascending on bits [0, end_bit). temp / offsets grow.
absl::Status SortSegments64(const uint64_t* in, uint64_t* out, int segments, int64_t len, int end_bit,
                            DeviceBuffer& temp, DeviceBuffer& offsets, cudaStream_t stream);
absl::Status SortSegments32(const uint32_t* in, uint32_t* out, int segments, int64_t len, int end_bit,
                            DeviceBuffer& temp, DeviceBuffer& offsets, cudaStream_t stream);

// out[h, i] = token of the i-th sorted key of head h, i < keep. With `order` null the token is the
// key's low 31 bits; otherwise the low 31 bits are an importance rank and the token is order[h, rank].
absl::Status LaunchTakeFirst(const uint64_t* sorted, const uint32_t* order, int heads, int64_t n, int64_t keep,
                             uint32_t* out, cudaStream_t stream);

// streaming: out[h, i] = i for i < sinks, else n - (keep - sinks) + (i - sinks).
absl::Status LaunchStreaming(int heads, int64_t n, int64_t keep, int64_t sinks, uint32_t* out, cudaStream_t stream);

// --- cab ---
// From the importance order (sorted keys of LaunchTopKeys with no recent tokens): order[h, i] = token
// of rank i, rank[h, token] = i.
absl::Status LaunchRanks(const uint64_t* sorted, int heads, int64_t n, uint32_t* order, uint32_t* rank,
                         cudaStream_t stream);
// Block keys: ordered(min F) << 32 | m for blocks with an edge, kNeverKey otherwise ([H, M]).
absl::Status LaunchBlockKeys(const float* block_min, const int32_t* has_edge, int heads, int blocks,
                             uint64_t* keys, cudaStream_t stream);
// block_rank[h, m] = position of block m in the sorted block keys, -1 for blocks without edges.
absl::Status LaunchBlockRanks(const uint64_t* sorted, int heads, int blocks, int32_t* block_rank,
                              cudaStream_t stream);
// Bridge keys: 0 for recent tokens (t >= recent_from); 1 << 62 | block_rank << 31 | rank[t] for tokens
// of ranked blocks; kNeverKey otherwise.
absl::Status LaunchBridgeKeys(const int32_t* block_rank, const uint32_t* rank, int heads, int64_t n, int block_size,
                              int64_t recent_from, uint64_t* keys, cudaStream_t stream);
// Final keys: (not taken) << 32 | rank[t], where taken = recent, or among sorted bridge keys at
// positions [recent, recent + bridges) (and not kNeverKey).
absl::Status LaunchFinalKeys(const uint64_t* sorted_bridges, const uint32_t* order, const uint32_t* rank, int heads,
                             int64_t n, int64_t recent, int64_t bridges, uint8_t* taken, uint64_t* keys,
                             cudaStream_t stream);

// --- snapkv ---
// Per query row of logits [rows, n]: row_max (float) and row_sum = sum_j exp(double(l) - max).
absl::Status LaunchRowSoftmaxStats(const float* logits, int64_t rows, int64_t n, float* row_max, double* row_sum,
                                   cudaStream_t stream);
// votes[j] += sum over rows in order of exp(double(l[q, j]) - max[q]) / sum[q].
absl::Status LaunchAccumulateVotes(const float* logits, int64_t rows, int64_t n, const float* row_max,
                                   const double* row_sum, double* votes, cudaStream_t stream);
// pooled[h * out_stride + j] = float(max of votes[h, j - half .. j + half] clipped to [0, prefix)).
absl::Status LaunchMaxPool(const double* votes, int heads, int64_t prefix, int half, int64_t out_stride,
                           float* pooled, cudaStream_t stream);

// *flag = 1 when any of x[0, n) is NaN or infinite, else 0.
absl::Status LaunchAnyNonFinite(const float* x, int64_t n, int* flag, cudaStream_t stream);

}  // namespace cab::cuda
