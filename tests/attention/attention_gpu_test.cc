// CUDA kernels against the naive double-precision references. Label "gpu": each test skips where
// no CUDA device answers. Outputs are poisoned (all bits set: NaN in fp16 and bf16) before every
// launch so that an unwritten element fails; inputs are fresh random values on every run.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "cab/attention/attention.h"
#include "cab/attention/cuda_attention.h"
#include "naive_reference.h"

namespace cab::attention {
namespace {

using testing::FreshSeed;
using testing::HostTensor;
using testing::RandomKeep;
using testing::RandomMask;
using testing::RandomTensor;
using testing::RelError;

#define SKIP_WITHOUT_GPU()                                          \
  do {                                                              \
    std::string why;                                                \
    if (!CudaAvailable(&why)) GTEST_SKIP() << "no GPU: " << why;    \
  } while (0)
#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

struct Dev {
  void* p = nullptr;
  ~Dev() { if (p) cudaFree(p); }
};
void Upload(Dev& d, const void* src, size_t n) {
  ASSERT_EQ(cudaMalloc(&d.p, n ? n : 1), cudaSuccess);
  if (n) {
    ASSERT_EQ(cudaMemcpy(d.p, src, n, cudaMemcpyHostToDevice), cudaSuccess);
  }
}
std::vector<float> DownloadWiden(const Dev& d, DType dtype, int64_t n) {
  std::vector<uint16_t> raw(n);
  EXPECT_EQ(cudaMemcpy(raw.data(), d.p, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<float> out(n);
  ToFloat(TensorView{raw.data(), dtype, {n}}, 0, n, out.data());
  return out;
}
double Tolerance(DType t) { return t == DType::kBF16 ? 1e-2 : 1e-3; }

struct PrefillCase {
  const char* name;
  DType dtype;
  int batch, q_heads, kv_heads, tokens, dim, block;
  double keep_prob;  // < 0: all kept; 0: only the diagonal
  bool flex;         // mask in the FlexAttention layout instead of BSR
  bool causal = true;
  cuda::PrefillKernel kernel = cuda::PrefillKernel::kAuto;  // auto: wgmma for d128/b128 on Hopper
  cuda::TileOrder order = cuda::TileOrder::kAuto;            // auto: head-major
  bool keep_diagonal = true;  // false: rows may keep no block at all (their output must be zeros)
};
// Short test names in ctest listings (the default prints the struct's bytes).
void PrintTo(const PrefillCase& c, std::ostream* os) { *os << c.name; }
class GpuPrefill : public ::testing::TestWithParam<PrefillCase> {};

TEST_P(GpuPrefill, MatchesDoubleReference) {
  SKIP_WITHOUT_GPU();
  const PrefillCase c = GetParam();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const HostTensor q = RandomTensor(rng, c.dtype, {c.batch, c.q_heads, c.tokens, c.dim}, 2.f);
  const HostTensor k = RandomTensor(rng, c.dtype, {c.batch, c.kv_heads, c.tokens, c.dim}, 2.f);
  const HostTensor v = RandomTensor(rng, c.dtype, {c.batch, c.kv_heads, c.tokens, c.dim}, 1.f);
  const int blocks = (c.tokens + c.block - 1) / c.block;
  const BlockMask mask = c.keep_prob < 0 ? DenseMask(c.batch, c.q_heads, blocks, c.causal)
                                         : RandomMask(rng, c.batch, c.q_heads, blocks, c.causal, c.keep_prob, c.keep_diagonal);
  Dev dq, dk, dv, dout, d1, d2;
  Upload(dq, q.bytes.data(), q.bytes.size());
  Upload(dk, k.bytes.data(), k.bytes.size());
  Upload(dv, v.bytes.data(), v.bytes.size());
  CUDA_OK(cudaMalloc(&dout.p, q.bytes.size()));
  CUDA_OK(cudaMemset(dout.p, 0xff, q.bytes.size()));
  cuda::PrefillArgs a;
  a.dtype = c.dtype;
  a.q = dq.p;
  a.k = dk.p;
  a.v = dv.p;
  a.o = dout.p;
  a.batch = c.batch;
  a.q_heads = c.q_heads;
  a.kv_heads = c.kv_heads;
  a.head_dim = c.dim;
  a.tokens = c.tokens;
  a.block_size = c.block;
  a.causal = c.causal;
  a.mask_heads = c.q_heads;
  a.kernel = c.kernel;
  a.order = c.order;
  std::vector<int32_t> num, idx;
  if (c.flex) {
    // Flex layout built here independently of cab::ToFlex: rows padded to max_k with zeros.
    int max_k = 1;
    for (size_t r = 0; r + 1 < mask.row_offsets.size(); ++r) max_k = std::max<int>(max_k, mask.row_offsets[r + 1] - mask.row_offsets[r]);
    for (size_t r = 0; r + 1 < mask.row_offsets.size(); ++r) {
      num.push_back(static_cast<int32_t>(mask.row_offsets[r + 1] - mask.row_offsets[r]));
      for (int e = 0; e < max_k; ++e) idx.push_back(e < num.back() ? mask.col_indices[mask.row_offsets[r] + e] : 0);
    }
    Upload(d1, num.data(), num.size() * 4);
    Upload(d2, idx.data(), idx.size() * 4);
    a.kv_num_blocks = static_cast<const int32_t*>(d1.p);
    a.kv_indices = static_cast<const int32_t*>(d2.p);
    a.max_k = max_k;
  } else {
    Upload(d1, mask.row_offsets.data(), mask.row_offsets.size() * 8);
    Upload(d2, mask.col_indices.data(), mask.col_indices.size() * 4);
    a.row_offsets = static_cast<const int64_t*>(d1.p);
    a.col_indices = static_cast<const int32_t*>(d2.p);
  }
  ASSERT_TRUE(cuda::Prefill(a, nullptr).ok());
  CUDA_OK(cudaDeviceSynchronize());
  const auto got = DownloadWiden(dout, c.dtype, q.view().numel());
  const double err = RelError(got, testing::NaivePrefill(q, k, v, mask, c.block, c.causal));
  EXPECT_LT(err, Tolerance(c.dtype));
  RecordProperty("rel_error", std::to_string(err));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GpuPrefill,
    ::testing::Values(
        PrefillCase{"random_bf16_d128_b128", DType::kBF16, 1, 2, 2, 512, 128, 128, 0.4, false},
        PrefillCase{"random_fp16_d64_b64", DType::kF16, 1, 2, 2, 512, 64, 64, 0.4, false},
        PrefillCase{"all_kept_bf16_d64_b128", DType::kBF16, 1, 2, 1, 384, 64, 128, -1, false},
        PrefillCase{"all_kept_fp16_d128_b64", DType::kF16, 1, 1, 1, 320, 128, 64, -1, false},
        PrefillCase{"diagonal_only_bf16", DType::kBF16, 1, 2, 2, 512, 128, 64, 0.0, false},
        PrefillCase{"ragged_tail_fp16_b128", DType::kF16, 1, 2, 2, 450, 128, 128, 0.5, false},
        PrefillCase{"ragged_tail_bf16_b64", DType::kBF16, 1, 2, 1, 333, 64, 64, 0.5, false},
        PrefillCase{"gqa_batch2_bf16", DType::kBF16, 2, 8, 2, 256, 128, 64, 0.5, false},
        PrefillCase{"flex_layout_fp16", DType::kF16, 2, 4, 2, 384, 64, 128, 0.5, true},
        PrefillCase{"non_causal_bf16", DType::kBF16, 1, 2, 2, 320, 64, 64, 0.5, false, false},
        // head_dim 128 with block 128 runs the wgmma kernel on Hopper (auto); the same cases forced
        // onto mma.sync keep that kernel covered there too.
        PrefillCase{"d128_b128_all_kept_fp16", DType::kF16, 1, 2, 2, 512, 128, 128, -1, false},
        PrefillCase{"d128_b128_diagonal_only_bf16", DType::kBF16, 1, 2, 1, 640, 128, 128, 0.0, false},
        PrefillCase{"d128_b128_gqa_batch2_ragged_bf16", DType::kBF16, 2, 4, 2, 700, 128, 128, 0.5, false},
        PrefillCase{"d128_b128_flex_fp16", DType::kF16, 1, 4, 4, 512, 128, 128, 0.5, true},
        PrefillCase{"d128_b128_non_causal_bf16", DType::kBF16, 1, 2, 2, 400, 128, 128, 0.5, false, false},
        PrefillCase{"mma_sync_d128_b128_bf16", DType::kBF16, 1, 2, 2, 700, 128, 128, 0.5, false, true,
                    cuda::PrefillKernel::kMmaSync},
        PrefillCase{"wgmma_serial_d128_b128_bf16", DType::kBF16, 2, 4, 2, 700, 128, 128, 0.5, false, true,
                    cuda::PrefillKernel::kWgmmaSerial},
        PrefillCase{"wgmma_half_block_bf16", DType::kBF16, 2, 4, 2, 700, 128, 128, 0.5, false, true,
                    cuda::PrefillKernel::kWgmmaHalfBlock},
        PrefillCase{"wgmma_half_block_fp16_short_tail", DType::kF16, 1, 2, 2, 300, 128, 128, -1, true, true,
                    cuda::PrefillKernel::kWgmmaHalfBlock},
        PrefillCase{"wgmma_half_block_non_causal", DType::kBF16, 1, 2, 1, 400, 128, 128, 0.5, false, false,
                    cuda::PrefillKernel::kWgmmaHalfBlock},
        PrefillCase{"d128_b128_one_block_fp16", DType::kF16, 1, 2, 2, 100, 128, 128, -1, false},
        PrefillCase{"d128_b128_dense_long_bf16", DType::kBF16, 1, 1, 1, 1100, 128, 128, -1, false},
        PrefillCase{"mma_sync_d128_b128_fp16_all", DType::kF16, 1, 2, 1, 512, 128, 128, -1, false, true,
                    cuda::PrefillKernel::kMmaSync},
        // The CTA order of round 1 (rows across heads) next to the default head-major one.
        PrefillCase{"rows_order_pipelined_gqa_batch2_ragged_bf16", DType::kBF16, 2, 4, 2, 700, 128, 128, 0.5, false, true,
                    cuda::PrefillKernel::kWgmma, cuda::TileOrder::kRowsAcrossHeads},
        PrefillCase{"rows_order_serial_fp16", DType::kF16, 2, 4, 2, 600, 128, 128, 0.5, true, true,
                    cuda::PrefillKernel::kWgmmaSerial, cuda::TileOrder::kRowsAcrossHeads},
        PrefillCase{"head_major_serial_gqa_batch2_bf16", DType::kBF16, 2, 4, 2, 700, 128, 128, 0.5, false, true,
                    cuda::PrefillKernel::kWgmmaSerial, cuda::TileOrder::kHeadMajor},
        // The default kernel's exp2f twin (the default uses ex2.approx.ftz in the softmax).
        PrefillCase{"exact_exp_pipelined_gqa_batch2_ragged_bf16", DType::kBF16, 2, 4, 2, 700, 128, 128, 0.5, false, true,
                    cuda::PrefillKernel::kWgmmaExactExp},
        PrefillCase{"exact_exp_pipelined_dense_fp16", DType::kF16, 1, 2, 2, 640, 128, 128, -1, true, true,
                    cuda::PrefillKernel::kWgmmaExactExp},
        PrefillCase{"head_major_half_block_fp16", DType::kF16, 2, 4, 1, 500, 128, 128, 0.5, false, true,
                    cuda::PrefillKernel::kWgmmaHalfBlock, cuda::TileOrder::kHeadMajor},
        // The warp-specialised TMA kernel (the default on Hopper, so the d128_b128 cases above run
        // it too) with and without ping-pong: long rows wrap the 3 stages' barrier phases many times;
        // empty rows; the other CTA order; non-causal; and the cp.async kernel it replaced.
        PrefillCase{"tma_pingpong_dense_long_bf16", DType::kBF16, 1, 2, 2, 2100, 128, 128, -1, false, true,
                    cuda::PrefillKernel::kWgmmaTma},
        PrefillCase{"tma_pingpong_gqa_batch2_ragged_fp16", DType::kF16, 2, 4, 2, 700, 128, 128, 0.5, true, true,
                    cuda::PrefillKernel::kWgmmaTma},
        PrefillCase{"tma_pingpong_empty_rows_bf16", DType::kBF16, 1, 4, 2, 900, 128, 128, 0.3, false, true,
                    cuda::PrefillKernel::kWgmmaTma, cuda::TileOrder::kAuto, false},
        PrefillCase{"tma_pingpong_rows_order_bf16", DType::kBF16, 2, 4, 1, 500, 128, 128, 0.5, false, true,
                    cuda::PrefillKernel::kWgmmaTma, cuda::TileOrder::kRowsAcrossHeads},
        PrefillCase{"tma_pingpong_non_causal_fp16", DType::kF16, 1, 2, 2, 650, 128, 128, 0.5, false, false,
                    cuda::PrefillKernel::kWgmmaTma},
        PrefillCase{"tma_no_pingpong_gqa_batch2_ragged_bf16", DType::kBF16, 2, 4, 2, 700, 128, 128, 0.5, false, true,
                    cuda::PrefillKernel::kWgmmaTmaNoPingPong},
        PrefillCase{"tma_no_pingpong_dense_long_fp16", DType::kF16, 1, 2, 1, 1800, 128, 128, -1, true, true,
                    cuda::PrefillKernel::kWgmmaTmaNoPingPong},
        PrefillCase{"tma_no_pingpong_empty_rows_non_causal_bf16", DType::kBF16, 1, 2, 2, 500, 128, 128, 0.2, false,
                    false, cuda::PrefillKernel::kWgmmaTmaNoPingPong, cuda::TileOrder::kAuto, false},
        PrefillCase{"cpasync_pipelined_gqa_batch2_ragged_bf16", DType::kBF16, 2, 4, 2, 700, 128, 128, 0.5, false, true,
                    cuda::PrefillKernel::kWgmma, cuda::TileOrder::kHeadMajor}),
    [](const ::testing::TestParamInfo<PrefillCase>& info) { return std::string(info.param.name); });

struct DecodeCase {
  const char* name;
  DType dtype;
  int batch, q_heads, kv_heads, q_len, tokens, dim;
  int64_t keep;  // 0: every token
  int splits;    // 0: automatic
};
// Short test names in ctest listings (the default prints the struct's bytes).
void PrintTo(const DecodeCase& c, std::ostream* os) { *os << c.name; }
class GpuDecode : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(GpuDecode, MatchesDoubleReference) {
  SKIP_WITHOUT_GPU();
  const DecodeCase c = GetParam();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const HostTensor q = RandomTensor(rng, c.dtype, {c.batch, c.q_heads, c.q_len, c.dim}, 2.f);
  const HostTensor k = RandomTensor(rng, c.dtype, {c.batch, c.kv_heads, c.tokens, c.dim}, 2.f);
  const HostTensor v = RandomTensor(rng, c.dtype, {c.batch, c.kv_heads, c.tokens, c.dim}, 1.f);
  KeepIndices keep;
  if (c.keep > 0) keep = RandomKeep(rng, c.batch, c.kv_heads, c.tokens, c.keep);
  Dev dq, dk, dv, dout, didx, dws;
  Upload(dq, q.bytes.data(), q.bytes.size());
  Upload(dk, k.bytes.data(), k.bytes.size());
  Upload(dv, v.bytes.data(), v.bytes.size());
  CUDA_OK(cudaMalloc(&dout.p, q.bytes.size()));
  CUDA_OK(cudaMemset(dout.p, 0xff, q.bytes.size()));
  cuda::DecodeArgs a;
  a.dtype = c.dtype;
  a.q = dq.p;
  a.k = dk.p;
  a.v = dv.p;
  a.o = dout.p;
  a.batch = c.batch;
  a.q_heads = c.q_heads;
  a.kv_heads = c.kv_heads;
  a.q_len = c.q_len;
  a.head_dim = c.dim;
  a.tokens = c.tokens;
  a.splits = c.splits;
  std::vector<int32_t> idx(keep.indices.begin(), keep.indices.end());
  if (c.keep > 0) {
    Upload(didx, idx.data(), idx.size() * 4);
    a.indices = static_cast<const int32_t*>(didx.p);
    a.keep = c.keep;
  }
  a.workspace_bytes = cuda::DecodeWorkspaceBytes(a);
  CUDA_OK(cudaMalloc(&dws.p, a.workspace_bytes));
  CUDA_OK(cudaMemset(dws.p, 0xff, a.workspace_bytes));
  a.workspace = dws.p;
  ASSERT_TRUE(cuda::Decode(a, nullptr).ok());
  CUDA_OK(cudaDeviceSynchronize());
  const auto got = DownloadWiden(dout, c.dtype, q.view().numel());
  EXPECT_LT(RelError(got, testing::NaiveDecode(q, k, v, c.keep > 0 ? &keep : nullptr)), Tolerance(c.dtype));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GpuDecode,
    ::testing::Values(DecodeCase{"keep_bf16_d128_gqa4", DType::kBF16, 1, 8, 2, 1, 4000, 128, 1000, 0},
                      DecodeCase{"keep_fp16_d64_batch2", DType::kF16, 2, 4, 4, 1, 3000, 64, 517, 0},
                      DecodeCase{"dense_bf16_many_splits", DType::kBF16, 1, 4, 1, 1, 5000, 128, 0, 37},
                      DecodeCase{"few_queries_gqa8_fp16", DType::kF16, 1, 16, 2, 3, 2000, 128, 300, 0},
                      DecodeCase{"one_split_bf16", DType::kBF16, 1, 2, 2, 1, 700, 64, 129, 1}),
    [](const ::testing::TestParamInfo<DecodeCase>& info) { return std::string(info.param.name); });

// The host API picks the GPU when there is one and gives the same answer as the CPU path.
TEST(GpuHostApi, AutoPicksCudaAndAgreesWithCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(FreshSeed());
  const HostTensor q = RandomTensor(rng, DType::kF16, {1, 4, 300, 64}, 2.f);
  const HostTensor k = RandomTensor(rng, DType::kF16, {1, 2, 300, 64}, 2.f);
  const BlockMask mask = RandomMask(rng, 1, 4, 5, true, 0.5);
  PrefillOptions opt;
  opt.block_size = 64;
  auto gpu = BlockSparsePrefill(q.view(), k.view(), k.view(), mask, opt);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_NE(gpu->device, "cpu");
  opt.device = Device::kCpu;
  auto cpu = BlockSparsePrefill(q.view(), k.view(), k.view(), mask, opt);
  ASSERT_TRUE(cpu.ok());
  auto err = RelativeError(gpu->out, cpu->out);
  ASSERT_TRUE(err.ok());
  EXPECT_LT(*err, 1e-3);
  const KeepIndices keep = RandomKeep(rng, 1, 2, 300, 50);
  auto dg = SparseDecode(q.view(), k.view(), k.view(), &keep, {});
  ASSERT_TRUE(dg.ok()) << dg.status();
  EXPECT_NE(dg->device, "cpu");
}

}  // namespace
}  // namespace cab::attention
