// Decode attention over keep-indices with a split-K reduction. Decode reads each kept K/V row once
// and does 2 FLOP per byte: it is memory-bound, so the kernel is built around 16-byte loads and
// enough CTAs in flight, not tensor cores. One CTA = one (batch, kv head, group of up to 8 query
// rows: the GQA heads x the T new queries, which share every K/V load) x one split of the keep
// list. Each group of D/8 lanes owns one key at a time, 8 channels per lane; partial (max, sum,
// output) per split go to a workspace and a second kernel merges them (log-sum-exp).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "cab/attention/cuda_attention.h"
#include "cuda_common.cuh"

namespace cab::attention::cuda {
namespace {

constexpr int kRows = 8;      // query rows per CTA
constexpr int kWarps = 4;
constexpr int kMinPerSplit = 128;  // keys: fewer per split costs more in the merge than it saves

struct DecodeParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  int q_heads, kv_heads, group, q_len, splits;
  int64_t tokens, keep, chunk;
  float scale_log2;
  const int32_t* indices;
  float* ws_m;  // [splits][rows_total]
  float* ws_l;
  float* ws_o;  // [splits][rows_total][D]
  int64_t rows_total;
};

template <typename T>
__device__ __forceinline__ void Widen8(const uint4& raw, float out[8]) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = dev::Mma<T>::Unpack(w[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kWarps * 32) DecodeSplitKernel(const DecodeParams p) {
  constexpr int L = D / 8;            // lanes per key
  constexpr int KPW = 32 / L;         // keys per warp step
  constexpr int G = kWarps * KPW;     // lane groups per CTA
  __shared__ float sm_m[G][kRows], sm_l[G][kRows];
  __shared__ float sm_o[G][kRows][D];

  const int split = blockIdx.x;
  const int b = blockIdx.y / p.kv_heads, hk = blockIdx.y % p.kv_heads;
  const int rows_here = min(kRows, p.group * p.q_len - static_cast<int>(blockIdx.z) * kRows);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int grp = warp * KPW + lane / L, sub = lane % L;

  auto row_of = [&](int r) -> int64_t {  // flat output row of local row r
    const int gi = static_cast<int>(blockIdx.z) * kRows + r;
    const int h = hk * p.group + gi / p.q_len, t = gi % p.q_len;
    return (static_cast<int64_t>(b) * p.q_heads + h) * p.q_len + t;
  };

  float q[kRows][8];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r < rows_here) {
      const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.q) + row_of(r) * D + sub * 8);
      Widen8<T>(raw, q[r]);
    } else {
#pragma unroll
      for (int c = 0; c < 8; ++c) q[r][c] = 0.f;
    }
  }
  float m[kRows], l[kRows], o[kRows][8];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int c = 0; c < 8; ++c) o[r][c] = 0.f;
  }

  const int64_t begin = split * p.chunk, end = min(p.keep, begin + p.chunk);
  const T* kg = static_cast<const T*>(p.k) + (static_cast<int64_t>(b) * p.kv_heads + hk) * p.tokens * D + sub * 8;
  const T* vg = static_cast<const T*>(p.v) + (static_cast<int64_t>(b) * p.kv_heads + hk) * p.tokens * D + sub * 8;
  const int32_t* idx = p.indices ? p.indices + (static_cast<int64_t>(b) * p.kv_heads + hk) * p.keep : nullptr;

  // The loop runs warp-uniformly (the shuffles need every lane); a group past the end skips the update.
  for (int64_t base = begin + warp * KPW; base < end; base += G) {
    const int64_t e = base + lane / L;
    const bool valid = e < end;
    const int64_t tok = valid ? (idx ? idx[e] : e) : 0;
    const uint4 kraw = *reinterpret_cast<const uint4*>(kg + tok * D);
    const uint4 vraw = *reinterpret_cast<const uint4*>(vg + tok * D);
    float kf[8], vf[8];
    Widen8<T>(kraw, kf);
    Widen8<T>(vraw, vf);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r >= rows_here) break;
      float dot = 0.f;
#pragma unroll
      for (int c = 0; c < 8; ++c) dot += q[r][c] * kf[c];
#pragma unroll
      for (int off = L / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
      if (valid) {
        const float x = dot * p.scale_log2;
        const float m_new = fmaxf(m[r], x);
        const float alpha = exp2f(m[r] - m_new), pe = exp2f(x - m_new);
        m[r] = m_new;
        l[r] = l[r] * alpha + pe;
#pragma unroll
        for (int c = 0; c < 8; ++c) o[r][c] = o[r][c] * alpha + pe * vf[c];
      }
    }
  }

  // Merge the lane groups of the CTA through shared memory, then write this split's partial.
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (sub == 0) {
      sm_m[grp][r] = m[r];
      sm_l[grp][r] = l[r];
    }
#pragma unroll
    for (int c = 0; c < 8; ++c) sm_o[grp][r][sub * 8 + c] = o[r][c];
  }
  __syncthreads();
  for (int x = threadIdx.x; x < rows_here * D; x += kWarps * 32) {
    const int r = x / D, d = x % D;
    float mx = -INFINITY;
    for (int g = 0; g < G; ++g) mx = fmaxf(mx, sm_m[g][r]);
    float acc = 0.f, sum = 0.f;
    if (mx != -INFINITY) {
      for (int g = 0; g < G; ++g) {
        const float w = exp2f(sm_m[g][r] - mx);
        acc += w * sm_o[g][r][d];
        sum += w * sm_l[g][r];
      }
    }
    const int64_t row = row_of(r);
    const int64_t slot = static_cast<int64_t>(split) * p.rows_total + row;
    p.ws_o[slot * D + d] = acc;
    if (d == 0) {
      p.ws_m[slot] = mx;
      p.ws_l[slot] = sum;
    }
  }
}

__device__ __forceinline__ __nv_bfloat16 FromFloat(float x, __nv_bfloat16) { return __float2bfloat16_rn(x); }
__device__ __forceinline__ __half FromFloat(float x, __half) { return __float2half_rn(x); }

template <typename T, int D>
__global__ void DecodeMergeKernel(const DecodeParams p) {
  const int64_t row = blockIdx.x;
  const int d = threadIdx.x;
  float mx = -INFINITY;
  for (int s = 0; s < p.splits; ++s) mx = fmaxf(mx, p.ws_m[s * p.rows_total + row]);
  float acc = 0.f, sum = 0.f;
  if (mx != -INFINITY) {
    for (int s = 0; s < p.splits; ++s) {
      const int64_t slot = s * p.rows_total + row;
      const float w = exp2f(p.ws_m[slot] - mx);
      acc += w * p.ws_o[slot * D + d];
      sum += w * p.ws_l[slot];
    }
  }
  const float out = sum > 0.f ? acc / sum : 0.f;
  static_cast<T*>(p.o)[row * D + d] = FromFloat(out, T());
}

int MultiprocessorCount() {
  static const int count = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      return 132;
    }
    return n;
  }();
  return count;
}

int64_t Keep(const DecodeArgs& a) { return a.indices ? a.keep : a.tokens; }

int ChooseSplits(const DecodeArgs& a) {
  if (a.splits > 0) return static_cast<int>(std::min<int64_t>(a.splits, std::max<int64_t>(1, Keep(a))));
  const int64_t groups = (static_cast<int64_t>(a.q_heads / a.kv_heads) * a.q_len + kRows - 1) / kRows;
  const int64_t base = static_cast<int64_t>(a.batch) * a.kv_heads * groups;
  const int64_t want = (4 * static_cast<int64_t>(MultiprocessorCount()) + base - 1) / base;
  const int64_t most = std::max<int64_t>(1, Keep(a) / kMinPerSplit);
  return static_cast<int>(std::max<int64_t>(1, std::min(want, most)));
}

template <typename T, int D>
absl::Status LaunchDecode(const DecodeParams& p, int batch, int64_t groups, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.splits), static_cast<unsigned>(batch * p.kv_heads), static_cast<unsigned>(groups));
  DecodeSplitKernel<T, D><<<grid, kWarps * 32, 0, stream>>>(p);
  DecodeMergeKernel<T, D><<<static_cast<unsigned>(p.rows_total), D, 0, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("decode kernel launch: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckDecodeArgs(const DecodeArgs& a) {
  if (a.dtype != DType::kBF16 && a.dtype != DType::kF16) return absl::InvalidArgumentError("dtype: fp16 or bf16");
  if (!a.q || !a.k || !a.v || !a.o) return absl::InvalidArgumentError("q/k/v/o: device pointers required");
  if (a.batch <= 0 || a.q_heads <= 0 || a.kv_heads <= 0 || a.q_len <= 0 || a.tokens <= 0) {
    return absl::InvalidArgumentError("batch/q_heads/kv_heads/q_len/tokens: must be > 0");
  }
  if (a.q_heads % a.kv_heads != 0) return absl::InvalidArgumentError("kv_heads: must divide q_heads");
  if (a.head_dim != 64 && a.head_dim != 128) return absl::InvalidArgumentError("head_dim: 64 or 128");
  if (a.indices && (a.keep <= 0 || a.keep > a.tokens)) return absl::InvalidArgumentError("keep: must be in [1, tokens]");
  if (!(a.scale >= 0) || std::isinf(a.scale)) return absl::InvalidArgumentError("scale: must be finite and >= 0");
  // Launch geometry: (batch x kv heads) on grid.y, groups of 8 query rows on grid.z.
  if (static_cast<int64_t>(a.batch) * a.kv_heads > 65535) return absl::InvalidArgumentError("batch * kv_heads: more than 65535");
  if ((static_cast<int64_t>(a.q_heads / a.kv_heads) * a.q_len + kRows - 1) / kRows > 65535) {
    return absl::InvalidArgumentError("q_len: too many query rows per kv head");
  }
  return absl::OkStatus();
}

size_t DecodeWorkspaceBytes(const DecodeArgs& a) {
  if (!CheckDecodeArgs(a).ok()) return 0;
  const int64_t rows = static_cast<int64_t>(a.batch) * a.q_heads * a.q_len;
  return static_cast<size_t>(ChooseSplits(a)) * rows * (a.head_dim + 2) * sizeof(float);
}

absl::Status Decode(const DecodeArgs& a, void* stream) {
  if (auto st = CheckDecodeArgs(a); !st.ok()) return st;
  const size_t need = DecodeWorkspaceBytes(a);
  if (a.workspace == nullptr || a.workspace_bytes < need) {
    return absl::InvalidArgumentError(absl::StrCat("workspace: needs ", need, " bytes, got ", a.workspace_bytes));
  }
  DecodeParams p{};
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.o = a.o;
  p.q_heads = a.q_heads;
  p.kv_heads = a.kv_heads;
  p.group = a.q_heads / a.kv_heads;
  p.q_len = a.q_len;
  p.tokens = a.tokens;
  p.keep = Keep(a);
  p.indices = a.indices;
  p.splits = ChooseSplits(a);
  p.chunk = (p.keep + p.splits - 1) / p.splits;
  const float scale = a.scale > 0 ? a.scale : static_cast<float>(1.0 / std::sqrt(double(a.head_dim)));
  p.scale_log2 = scale * 1.4426950408889634f;
  p.rows_total = static_cast<int64_t>(a.batch) * a.q_heads * a.q_len;
  float* ws = static_cast<float*>(a.workspace);
  p.ws_m = ws;
  p.ws_l = ws + p.splits * p.rows_total;
  p.ws_o = ws + 2 * p.splits * p.rows_total;
  const int64_t groups = (static_cast<int64_t>(p.group) * a.q_len + kRows - 1) / kRows;
  auto s = static_cast<cudaStream_t>(stream);
  if (a.dtype == DType::kBF16) {
    return a.head_dim == 64 ? LaunchDecode<__nv_bfloat16, 64>(p, a.batch, groups, s)
                            : LaunchDecode<__nv_bfloat16, 128>(p, a.batch, groups, s);
  }
  return a.head_dim == 64 ? LaunchDecode<__half, 64>(p, a.batch, groups, s) : LaunchDecode<__half, 128>(p, a.batch, groups, s);
}

}  // namespace cab::attention::cuda
