// The kept-block bitsets of the selection turned into CSR on the device (cab::BlockMask's layout:
// int64 row offsets, int32 column indices ascending within a row).
//
// Why: at 128k / block 64 (32 heads x 2048 rows, ~3.2 M kept blocks) the host loop over set bits
// took 58 ms of a 90 ms PredictMask through cab-server, where the kernels take 1.4 ms (H100 host,
// notes/gpu-runs.md run 32). Here: a warp per row counts, a device scan places the rows, a warp per
// row writes its columns, and the host copies two arrays.
#include "mask_csr.h"

#include <cub/device/device_scan.cuh>

#include "cuda_status.h"
#include "device_util.cuh"

namespace cab::cuda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kFull = 0xffffffffu;

// counts[r + 1] = kept blocks of row r (counts[0] = 0, so that an inclusive scan gives offsets).
__global__ void RowCountKernel(const uint32_t* bits, int64_t rows, int words, int64_t* counts) {
  const int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (r == 0 && lane == 0) counts[0] = 0;
  if (r >= rows) return;  // whole warp
  int c = 0;
  for (int w = lane; w < words; w += 32) c += __popc(bits[r * words + w]);
  for (int off = 16; off > 0; off >>= 1) c += __shfl_xor_sync(kFull, c, off);
  if (lane == 0) counts[r + 1] = c;
}

// Row r's columns from offsets[r], ascending: 32 words at a time, each lane's word placed after the
// set bits of the lanes before it.
__global__ void RowFillKernel(const uint32_t* bits, int64_t rows, int words, const int64_t* offsets, int32_t* cols) {
  const int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;  // whole warp
  int64_t at = offsets[r];
  for (int w0 = 0; w0 < words; w0 += 32) {  // warp-uniform
    const int w = w0 + lane;
    uint32_t b = w < words ? bits[r * words + w] : 0u;
    const int c = __popc(b);
    const int through = WarpInclusiveSum(c);  // set bits of the lanes up to and including this one
    int32_t* out = cols + at + (through - c);
    for (; b; b &= b - 1) *out++ = 32 * w + __ffs(b) - 1;
    at += __shfl_sync(kFull, through, 31);
  }
}

}  // namespace

absl::Status MaskCsr::Build(const uint32_t* bits, int64_t rows, int words, cudaStream_t stream) {
  rows_ = rows;
  CAB_RETURN_IF_ERROR(counts_.Reserve(static_cast<size_t>(rows + 1) * sizeof(int64_t)));
  CAB_RETURN_IF_ERROR(offsets_.Reserve(static_cast<size_t>(rows + 1) * sizeof(int64_t)));
  const unsigned grid = static_cast<unsigned>((rows * 32 + kThreads - 1) / kThreads);
  RowCountKernel<<<grid, kThreads, 0, stream>>>(bits, rows, words, counts_.as<int64_t>());
  CAB_CUDA_LAUNCHED("mask rows: counts");
  size_t temp = 0;
  CAB_CUDA_RETURN(cub::DeviceScan::InclusiveSum(nullptr, temp, counts_.as<int64_t>(), offsets_.as<int64_t>(),
                                                static_cast<int>(rows + 1), stream));
  CAB_RETURN_IF_ERROR(scan_temp_.Reserve(temp));
  CAB_CUDA_RETURN(cub::DeviceScan::InclusiveSum(scan_temp_.as<void>(), temp, counts_.as<int64_t>(),
                                                offsets_.as<int64_t>(), static_cast<int>(rows + 1), stream));
  // The column count sizes the column buffer: one small copy and a wait.
  CAB_RETURN_IF_ERROR(host_.Reserve(static_cast<size_t>(rows + 1) * sizeof(int64_t)));
  CAB_CUDA_RETURN(cudaMemcpyAsync(host_.as<int64_t>(), offsets_.as<int64_t>(), static_cast<size_t>(rows + 1) * sizeof(int64_t),
                                  cudaMemcpyDeviceToHost, stream));
  CAB_CUDA_RETURN(cudaStreamSynchronize(stream));
  entries_ = host_.as<int64_t>()[rows];
  CAB_RETURN_IF_ERROR(cols_.Reserve(std::max<size_t>(1, static_cast<size_t>(entries_) * sizeof(int32_t))));
  RowFillKernel<<<grid, kThreads, 0, stream>>>(bits, rows, words, offsets_.as<int64_t>(), cols_.as<int32_t>());
  CAB_CUDA_LAUNCHED("mask rows: columns");
  return absl::OkStatus();
}

absl::Status MaskCsr::Download(std::vector<int64_t>* row_offsets, std::vector<int32_t>* col_indices,
                               cudaStream_t stream) {
  // The offsets are already on the host (Build); the columns go straight into the vector.
  row_offsets->assign(host_.as<int64_t>(), host_.as<int64_t>() + rows_ + 1);
  col_indices->resize(static_cast<size_t>(entries_));
  if (entries_ > 0) {
    CAB_CUDA_RETURN(cudaMemcpyAsync(col_indices->data(), cols_.as<int32_t>(), static_cast<size_t>(entries_) * sizeof(int32_t),
                                    cudaMemcpyDeviceToHost, stream));
  }
  CAB_CUDA_RETURN(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

}  // namespace cab::cuda
