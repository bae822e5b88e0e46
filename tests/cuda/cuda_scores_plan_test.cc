// The banded causal score GEMMs (CausalScorePlan, label gpu): a plan is built per operand buffers and
// kept, so requests that alternate between a worker's two input slots, or a pipeline's head groups,
// each read their own operands (a stale pointer array would score the wrong heads), checked against
// a host dot product. Skips with the reason where no GPU exists.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "scores.h"

namespace {

using cab::cuda::CausalScorePlan;
using cab::cuda::GemmMode;
using cab::cuda::ScoreArgs;

struct Operands {
  std::vector<float> q, k;  // host copies of the bf16 values, [heads, M, D]
  __nv_bfloat16 *dq = nullptr, *dk = nullptr;
};

Operands MakeOperands(int heads, int M, int D, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  Operands o;
  const size_t n = static_cast<size_t>(heads) * M * D;
  std::vector<__nv_bfloat16> hq(n), hk(n);
  o.q.resize(n);
  o.k.resize(n);
  for (size_t i = 0; i < n; ++i) {
    hq[i] = __float2bfloat16(normal(rng));
    hk[i] = __float2bfloat16(normal(rng));
    o.q[i] = __bfloat162float(hq[i]);
    o.k[i] = __bfloat162float(hk[i]);
  }
  EXPECT_EQ(cudaMalloc(&o.dq, n * 2), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&o.dk, n * 2), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(o.dq, hq.data(), n * 2, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(o.dk, hk.data(), n * 2, cudaMemcpyHostToDevice), cudaSuccess);
  return o;
}

// Rows i >= j of every head against a double-precision dot product; returns the entries off by more
// than the fp32-accumulation tolerance.
int64_t CausalMismatches(const Operands& o, const std::vector<float>& s, int heads, int M, int D) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  int64_t bad = 0;
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < M; ++i) {
      for (int j = 0; j <= i; ++j) {
        double dot = 0;
        for (int d = 0; d < D; ++d) {
          dot += static_cast<double>(o.q[(static_cast<size_t>(h) * M + i) * D + d]) * o.k[(static_cast<size_t>(h) * M + j) * D + d];
        }
        const double got = s[(static_cast<size_t>(h) * M + i) * M + j];
        if (std::fabs(got - dot * scale) > 1e-3 * (1.0 + std::fabs(dot * scale))) ++bad;
      }
    }
  }
  return bad;
}

TEST(CausalScorePlan, AlternatingOperandsEachReadTheirOwn) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    GTEST_SKIP() << "skipped: no CUDA device (this test runs on the GPU host)";
  }
  constexpr int kHeads = 2, kM = CausalScorePlan::kMinBlocks, kD = 64;
  const Operands a = MakeOperands(kHeads, kM, kD, 11), b = MakeOperands(kHeads, kM, kD, 12);
  float* scores = nullptr;
  const size_t s_elems = static_cast<size_t>(kHeads) * kM * kM;
  ASSERT_EQ(cudaMalloc(&scores, s_elems * 4), cudaSuccess);
  cublasHandle_t handle;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  CausalScorePlan plan;
  std::vector<float> s(s_elems);
  // a, b, a, b: the third and fourth calls find the plans the first two built.
  const Operands* order[] = {&a, &b, &a, &b};
  for (int call = 0; call < 4; ++call) {
    const Operands& o = *order[call];
    ScoreArgs args;
    args.batch = 1;
    args.q_heads = args.kv_heads = kHeads;
    args.blocks = kM;
    args.dim = kD;
    args.mode = GemmMode::kBf16;
    args.q16 = o.dq;
    args.k16 = o.dk;
    args.bf16_ready = true;
    args.scores = scores;
    ASSERT_EQ(cudaMemsetAsync(scores, 0xff, s_elems * 4, stream), cudaSuccess);  // NaN: unwritten entries show
    const absl::Status st = cab::cuda::LaunchScores(handle, args, stream, &plan);
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(cudaMemcpyAsync(s.data(), scores, s_elems * 4, cudaMemcpyDeviceToHost, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(CausalMismatches(o, s, kHeads, kM, kD), 0) << "call " << call;
  }
  cublasDestroy(handle);
  cudaStreamDestroy(stream);
  for (void* p : {static_cast<void*>(scores), static_cast<void*>(a.dq), static_cast<void*>(a.dk),
                  static_cast<void*>(b.dq), static_cast<void*>(b.dk)}) {
    cudaFree(p);
  }
}

}  // namespace
