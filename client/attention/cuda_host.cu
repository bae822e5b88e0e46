// Host side of the CUDA path for the host API: upload inputs and mask, run, time with device
// events, download. Callers that keep tensors on the GPU use cuda_attention.h directly.
#include <cuda_runtime.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "attention_internal.h"
#include "cab/attention/cuda_attention.h"

namespace cab::attention::internal {
namespace {

#define CAB_CUDA_RETURN(expr)                                                                   \
  do {                                                                                          \
    const cudaError_t cab_err_ = (expr);                                                        \
    if (cab_err_ != cudaSuccess) return absl::InternalError(absl::StrCat(#expr, ": ", cudaGetErrorString(cab_err_))); \
  } while (0)

// Device buffer freed on scope exit.
struct DeviceBuffer {
  void* ptr = nullptr;
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  absl::Status Alloc(size_t bytes) {
    CAB_CUDA_RETURN(cudaMalloc(&ptr, bytes == 0 ? 1 : bytes));
    return absl::OkStatus();
  }
  absl::Status Upload(const void* src, size_t bytes) {
    if (auto st = Alloc(bytes); !st.ok()) return st;
    if (bytes) CAB_CUDA_RETURN(cudaMemcpy(ptr, src, bytes, cudaMemcpyHostToDevice));
    return absl::OkStatus();
  }
};

struct Events {
  cudaEvent_t start = nullptr, stop = nullptr;
  ~Events() {
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
  }
};

absl::StatusOr<FloatTensor> Download(const DeviceBuffer& buf, DType dtype, std::vector<int64_t> shape) {
  TensorView view{nullptr, dtype, shape};
  std::vector<uint16_t> raw(static_cast<size_t>(view.numel()));
  CAB_CUDA_RETURN(cudaMemcpy(raw.data(), buf.ptr, raw.size() * 2, cudaMemcpyDeviceToHost));
  view.data = raw.data();
  FloatTensor out;
  out.shape = shape;
  out.data.resize(raw.size());
  ToFloat(view, 0, view.numel(), out.data.data());
  return out;
}

}  // namespace

std::string CudaDeviceName() {
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) return "cuda";
  return prop.name;
}

bool CudaDeviceAvailable(std::string* why_not) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (why_not) *why_not = absl::StrCat("no CUDA device (", cudaGetErrorString(err), ")");
    return false;
  }
  if (count == 0) {
    if (why_not) *why_not = "no CUDA device";
    return false;
  }
  return true;
}

// Runs `launch` between two CUDA events on the default stream and downloads the output `out`
// (shaped and typed like q): what prefill and decode report alike.
template <typename Launch>
absl::StatusOr<AttentionResult> TimeAndDownload(Launch launch, const DeviceBuffer& out, const TensorView& q) {
  Events ev;
  CAB_CUDA_RETURN(cudaEventCreate(&ev.start));
  CAB_CUDA_RETURN(cudaEventCreate(&ev.stop));
  CAB_CUDA_RETURN(cudaEventRecord(ev.start));
  if (auto st = launch(); !st.ok()) return st;
  CAB_CUDA_RETURN(cudaEventRecord(ev.stop));
  CAB_CUDA_RETURN(cudaEventSynchronize(ev.stop));
  float ms = 0;
  CAB_CUDA_RETURN(cudaEventElapsedTime(&ms, ev.start, ev.stop));
  auto host = Download(out, q.dtype, q.shape);
  if (!host.ok()) return host.status();
  AttentionResult res;
  res.out = std::move(*host);
  res.device = CudaDeviceName();
  res.kernel_ms = ms;
  return res;
}

absl::StatusOr<AttentionResult> PrefillCuda(const TensorView& q, const TensorView& k, const TensorView& v,
                                            const BlockMask& mask, const PrefillShape& s, bool causal) {
  DeviceBuffer dq, dk, dv, do_, doff, dcol;
  if (auto st = dq.Upload(q.data, q.nbytes()); !st.ok()) return st;
  if (auto st = dk.Upload(k.data, k.nbytes()); !st.ok()) return st;
  if (auto st = dv.Upload(v.data, v.nbytes()); !st.ok()) return st;
  if (auto st = do_.Alloc(q.nbytes()); !st.ok()) return st;
  // Poisoned (0xFFFF is NaN in fp16 and bf16) so that a row the kernel fails to write shows.
  CAB_CUDA_RETURN(cudaMemset(do_.ptr, 0xFF, q.nbytes()));
  if (auto st = doff.Upload(mask.row_offsets.data(), mask.row_offsets.size() * sizeof(int64_t)); !st.ok()) return st;
  if (auto st = dcol.Upload(mask.col_indices.data(), mask.col_indices.size() * sizeof(int32_t)); !st.ok()) return st;
  cuda::PrefillArgs a;
  a.dtype = q.dtype;
  a.q = dq.ptr;
  a.k = dk.ptr;
  a.v = dv.ptr;
  a.o = do_.ptr;
  a.batch = s.batch;
  a.q_heads = s.q_heads;
  a.kv_heads = s.kv_heads;
  a.head_dim = s.head_dim;
  a.tokens = s.tokens;
  a.block_size = s.block_size;
  a.causal = causal;
  a.scale = s.scale;
  a.mask_heads = s.mask_heads;
  a.row_offsets = static_cast<const int64_t*>(doff.ptr);
  a.col_indices = static_cast<const int32_t*>(dcol.ptr);
  return TimeAndDownload([&] { return cuda::Prefill(a, nullptr); }, do_, q);
}

absl::StatusOr<AttentionResult> DecodeCuda(const TensorView& q, const TensorView& k, const TensorView& v,
                                           const KeepIndices* keep, const DecodeShape& s) {
  DeviceBuffer dq, dk, dv, do_, didx, dws;
  if (auto st = dq.Upload(q.data, q.nbytes()); !st.ok()) return st;
  if (auto st = dk.Upload(k.data, k.nbytes()); !st.ok()) return st;
  if (auto st = dv.Upload(v.data, v.nbytes()); !st.ok()) return st;
  if (auto st = do_.Alloc(q.nbytes()); !st.ok()) return st;
  CAB_CUDA_RETURN(cudaMemset(do_.ptr, 0xFF, q.nbytes()));  // poisoned, as for prefill
  cuda::DecodeArgs a;
  a.dtype = q.dtype;
  a.q = dq.ptr;
  a.k = dk.ptr;
  a.v = dv.ptr;
  a.o = do_.ptr;
  a.batch = s.batch;
  a.q_heads = s.q_heads;
  a.kv_heads = s.kv_heads;
  a.q_len = s.q_len;
  a.head_dim = s.head_dim;
  a.tokens = s.tokens;
  a.scale = s.scale;
  if (keep != nullptr) {
    std::vector<int32_t> idx(keep->indices.begin(), keep->indices.end());  // < N <= 2^31 checked by the caller's sizes
    if (auto st = didx.Upload(idx.data(), idx.size() * sizeof(int32_t)); !st.ok()) return st;
    a.indices = static_cast<const int32_t*>(didx.ptr);
    a.keep = keep->per_head;
  }
  a.workspace_bytes = cuda::DecodeWorkspaceBytes(a);
  if (auto st = dws.Alloc(a.workspace_bytes); !st.ok()) return st;
  a.workspace = dws.ptr;
  return TimeAndDownload([&] { return cuda::Decode(a, nullptr); }, do_, q);
}

}  // namespace cab::attention::internal
