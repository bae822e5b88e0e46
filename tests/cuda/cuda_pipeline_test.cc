// PipelinedPredictor (label gpu): coarsening and prediction overlapped by head groups must give the
// mask the sequential order gives (coarsen, then one Enqueue of all heads), identically, for equal
// and unequal groups, GQA and batch, a partial last block, decode rows and two policies; run twice
// with the representatives overwritten in between, so that a group whose prediction started
// before its coarsening finished (a count not reset) would read garbage and show. Shapes the
// pipeline cannot take are refused before anything is launched. Skips with the reason where no
// GPU exists.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cab/mask.h"
#include "cab/params.h"
#include "coarsen_kernel.h"
#include "device_predictor.h"
#include "gtest/gtest.h"
#include "pipelined_predictor.h"

namespace {

using cab::cuda::CoarsenArgs;
using cab::cuda::DevicePredictor;
using cab::cuda::PipelinedPredictor;
using cab::cuda::PredictorInputs;

bool HaveGpu() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return false;
  }
  return true;
}

struct Case {
  int B, Hq, Hkv, N, D, block, groups, streams;
  cab::MaskPolicy policy;
  int decode_rows;  // 0: every row; else the last decode_rows rows
};

std::string Describe(const Case& c) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "B=%d Hq=%d Hkv=%d N=%d D=%d block=%d groups=%d streams=%d policy=%s rows=%s", c.B,
                c.Hq, c.Hkv, c.N, c.D, c.block, c.groups, c.streams, cab::Name(c.policy).c_str(),
                c.decode_rows ? std::to_string(c.decode_rows).c_str() : "all");
  return buf;
}

__nv_bfloat16* RandomBf16(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<__nv_bfloat16> h(n);
  for (auto& v : h) v = __float2bfloat16(normal(rng));
  __nv_bfloat16* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, n * 2), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, h.data(), n * 2, cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

void ExpectSameMask(const cab::BlockMask& got, const cab::BlockMask& want, const char* what) {
  EXPECT_EQ(got.rows, want.rows) << what;
  EXPECT_EQ(got.row_begin, want.row_begin) << what;
  EXPECT_TRUE(got.row_offsets == want.row_offsets) << what << ": row offsets differ";
  EXPECT_TRUE(got.col_indices == want.col_indices) << what << ": columns differ";
}

void RunCase(const Case& c) {
  SCOPED_TRACE(Describe(c));
  const int M = (c.N + c.block - 1) / c.block;
  const size_t nq = static_cast<size_t>(c.B) * c.Hq * c.N * c.D, nk = static_cast<size_t>(c.B) * c.Hkv * c.N * c.D;
  __nv_bfloat16* q = RandomBf16(nq, 100 + c.N);
  __nv_bfloat16* k = RandomBf16(nk, 200 + c.N);
  const size_t cq = static_cast<size_t>(c.B) * c.Hq * M * c.D, ck = static_cast<size_t>(c.B) * c.Hkv * M * c.D;
  __nv_bfloat16 *q_rep = nullptr, *k_rep = nullptr;
  ASSERT_EQ(cudaMalloc(&q_rep, cq * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&k_rep, ck * 2), cudaSuccess);

  CoarsenArgs qa;
  qa.x = q;
  qa.dtype = cab::DType::kBF16;
  qa.batch = c.B;
  qa.heads = c.Hq;
  qa.dim = c.D;
  qa.block_size = c.block;
  qa.tokens = c.N;
  qa.maxl2_bf16 = q_rep;
  CoarsenArgs ka = qa;
  ka.x = k;
  ka.heads = c.Hkv;
  ka.maxl2_bf16 = k_rep;
  PredictorInputs in;
  in.batch = c.B;
  in.q_heads = c.Hq;
  in.kv_heads = c.Hkv;
  in.blocks = M;
  in.dim = c.D;
  in.bf16_exact = true;
  in.q_rep_bf16 = q_rep;
  in.k_feature_bf16 = k_rep;
  cab::MaskParams p;
  p.policy = c.policy;
  p.sparsity = 0.9f;
  const int row_begin = c.decode_rows ? M - c.decode_rows : 0;

  auto pred = DevicePredictor::Create(0, cab::cuda::GemmPolicy::kAuto);
  ASSERT_TRUE(pred.ok()) << pred.status();
  const cudaStream_t stream = (*pred)->stream();
  ASSERT_TRUE(cab::cuda::LaunchCoarsenPair(qa, ka, stream).ok());
  ASSERT_TRUE((*pred)->Enqueue(in, p, row_begin, M, false).ok());
  cab::BlockMask want;
  ASSERT_TRUE((*pred)->DownloadMask(&want).ok());
  ASSERT_EQ(want.rows, M - row_begin);

  auto piped = PipelinedPredictor::Create(pred->get(), {c.groups, 32, c.streams, true});
  ASSERT_TRUE(piped.ok()) << piped.status();
  for (int run = 0; run < 2; ++run) {
    // Garbage representatives (bf16 0xffff is NaN): only the coarsening of this run can repair them.
    ASSERT_EQ(cudaMemsetAsync(q_rep, 0xff, cq * 2, stream), cudaSuccess);
    ASSERT_EQ(cudaMemsetAsync(k_rep, 0xff, ck * 2, stream), cudaSuccess);
    const absl::Status st = (*piped)->Enqueue(qa, ka, in, p, row_begin, M);
    ASSERT_TRUE(st.ok()) << st;
    cab::BlockMask got;
    ASSERT_TRUE((*pred)->DownloadMask(&got).ok());
    ExpectSameMask(got, want, run == 0 ? "first run" : "second run");
  }
  EXPECT_EQ((*piped)->groups(), std::min(c.groups, c.B * c.Hkv));
  piped->reset();
  pred->reset();
  for (void* ptr : {static_cast<void*>(q), static_cast<void*>(k), static_cast<void*>(q_rep), static_cast<void*>(k_rep)}) {
    cudaFree(ptr);
  }
}

TEST(PipelinedPredictor, SameMaskAsSequentialOrder) {
  if (!HaveGpu()) GTEST_SKIP() << "skipped: no CUDA device (this test runs on the GPU host)";
  const std::vector<Case> cases = {
      {1, 8, 8, 16384, 128, 64, 4, 2, cab::MaskPolicy::kCab, 0},        // tapered parts of 3, 2, 2, 1 heads
      {2, 8, 2, 5000, 64, 64, 3, 2, cab::MaskPolicy::kCab, 0},          // GQA, batch 2: parts of 2, 1, 1 kv rows
      {1, 4, 4, 8192, 128, 128, 8, 3, cab::MaskPolicy::kMagnitude, 0},  // more groups asked than kv heads
      {1, 8, 4, 9000, 128, 64, 2, 1, cab::MaskPolicy::kCab, 3},         // one stream, decode rows, partial block
  };
  for (const Case& c : cases) RunCase(c);
}

TEST(PipelinedPredictor, RefusesWhatItCannotTake) {
  if (!HaveGpu()) GTEST_SKIP() << "skipped: no CUDA device (this test runs on the GPU host)";
  auto pred = DevicePredictor::Create(0, cab::cuda::GemmPolicy::kAuto);
  ASSERT_TRUE(pred.ok()) << pred.status();
  auto piped = PipelinedPredictor::Create(pred->get(), {4, 32, 2, true});
  ASSERT_TRUE(piped.ok()) << piped.status();
  __nv_bfloat16* buf = nullptr;
  ASSERT_EQ(cudaMalloc(&buf, 1 << 20), cudaSuccess);
  CoarsenArgs qa;
  qa.x = buf;
  qa.dtype = cab::DType::kBF16;
  qa.batch = 1;
  qa.heads = 4;
  qa.dim = 64;
  qa.block_size = 64;
  qa.tokens = 1024;
  qa.maxl2_bf16 = buf;
  CoarsenArgs ka = qa;
  PredictorInputs in;
  in.batch = 1;
  in.q_heads = in.kv_heads = 4;
  in.blocks = 16;
  in.dim = 64;
  in.bf16_exact = true;
  in.q_rep_bf16 = in.k_feature_bf16 = buf;
  cab::MaskParams p;
  PredictorInputs other = in;
  other.k_feature_bf16 = buf + 64;  // not what the key coarsening writes
  EXPECT_EQ((*piped)->Enqueue(qa, ka, other, p, 0, 16).code(), absl::StatusCode::kInvalidArgument);
  cab::MaskParams mean = p;
  mean.graph.estimator = cab::Estimator::kMean;  // its key feature is not a bf16 representative
  EXPECT_EQ((*piped)->Enqueue(qa, ka, in, mean, 0, 16).code(), absl::StatusCode::kInvalidArgument);
  CoarsenArgs k3 = ka;
  k3.heads = 3;  // 4 query heads over 3 kv heads
  other = in;
  other.kv_heads = 3;
  EXPECT_EQ((*piped)->Enqueue(qa, k3, other, p, 0, 16).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cudaStreamSynchronize((*pred)->stream()), cudaSuccess);  // nothing was left waiting
  cudaFree(buf);
}

}  // namespace
