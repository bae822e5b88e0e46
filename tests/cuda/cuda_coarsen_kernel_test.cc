// The coarsening kernel called directly (label gpu): a launch that asks only for the max-L2
// representatives (no mean, no Quest bounds: the inner loop without channel statistics) must give the
// same representatives, bf16 copies, best norms and counts as a launch that asks for everything, whose
// outputs CudaBackend.CoarsenMatchesCpu compares with the CPU backend. Also checks that the pipeline
// knob (max_ctas_per_sm) changes nothing but the grid, and that coarsening the queries and the keys in
// one launch (LaunchCoarsenPair) writes what two launches write. Skips with the reason where no GPU
// exists.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "coarsen_kernel.h"
#include "gtest/gtest.h"

namespace {

using cab::DType;
using cab::cuda::CoarsenArgs;

#define REQUIRE_CUDA_DEVICE()                                                             \
  do {                                                                                    \
    int count = 0;                                                                        \
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {                        \
      cudaGetLastError();                                                                 \
      GTEST_SKIP() << "skipped: no CUDA device (this test runs on the GPU host)";         \
    }                                                                                     \
  } while (0)

struct Shape {
  int heads, tokens, dim, block;
  DType dtype;
};

// Device outputs of one launch, copied back.
struct Outputs {
  std::vector<float> maxl2, best;
  std::vector<int32_t> count;
  std::vector<uint16_t> maxl2_bf16;
};

template <typename T>
T* DeviceAlloc(size_t n) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemset(p, 0xff, n * sizeof(T)), cudaSuccess);  // not zero: unwritten outputs show
  return static_cast<T*>(p);
}

// Random input with a few scaled-up "needle" tokens (so the max-L2 pick is not always a near-tie).
std::vector<unsigned char> RandomInput(const Shape& s, uint64_t seed) {
  const size_t elems = static_cast<size_t>(s.heads) * s.tokens * s.dim;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<unsigned char> bytes(elems * (s.dtype == DType::kF32 ? 4 : 2));
  for (size_t i = 0; i < elems; ++i) {
    float v = normal(rng);
    if ((i / s.dim) % 37 == 5) v *= 3.f;
    if (s.dtype == DType::kF32) {
      std::memcpy(bytes.data() + 4 * i, &v, 4);
    } else {
      const __nv_bfloat16 b = __float2bfloat16(v);
      std::memcpy(bytes.data() + 2 * i, &b, 2);
    }
  }
  return bytes;
}

// Device buffers of one tensor's outputs; `f32` false leaves maxl2 null (bf16 copies only).
struct DeviceOutputs {
  CoarsenArgs args;
  size_t rows = 0, elems = 0;
  DeviceOutputs(const Shape& s, const void* x, bool f32, bool stats) {
    args.x = x;
    args.dtype = s.dtype;
    args.batch = 1;
    args.heads = s.heads;
    args.tokens = s.tokens;
    args.dim = s.dim;
    args.block_size = s.block;
    rows = static_cast<size_t>(s.heads) * args.blocks();
    elems = rows * s.dim;
    if (f32) args.maxl2 = DeviceAlloc<float>(elems);
    args.maxl2_bf16 = DeviceAlloc<__nv_bfloat16>(elems);
    args.best_norm2 = DeviceAlloc<float>(rows);
    args.count = DeviceAlloc<int32_t>(rows);
    if (stats) {
      args.mean = DeviceAlloc<float>(elems);
      args.kmin = DeviceAlloc<float>(elems);
      args.kmax = DeviceAlloc<float>(elems);
    }
  }
  ~DeviceOutputs() {
    for (void* p : {static_cast<void*>(args.maxl2), static_cast<void*>(args.maxl2_bf16),
                    static_cast<void*>(args.best_norm2), static_cast<void*>(args.count), static_cast<void*>(args.mean),
                    static_cast<void*>(args.kmin), static_cast<void*>(args.kmax)}) {
      if (p) cudaFree(p);
    }
  }
  // Every output as bytes (absent ones empty), for exact comparison.
  std::vector<std::vector<unsigned char>> Download() const {
    std::vector<std::vector<unsigned char>> out;
    const std::pair<const void*, size_t> parts[] = {
        {args.maxl2, elems * 4}, {args.maxl2_bf16, elems * 2}, {args.best_norm2, rows * 4}, {args.count, rows * 4},
        {args.mean, elems * 4},  {args.kmin, elems * 4},       {args.kmax, elems * 4}};
    for (const auto& [ptr, bytes] : parts) {
      std::vector<unsigned char> host(ptr ? bytes : 0);
      if (ptr) {
        EXPECT_EQ(cudaMemcpy(host.data(), ptr, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
      }
      out.push_back(std::move(host));
    }
    return out;
  }
};

// One LaunchCoarsen over `x` with every output (the channel statistics only with `stats`), copied back.
Outputs LaunchAndCopy(const Shape& s, const void* x, bool stats, int max_ctas) {
  DeviceOutputs d(s, x, /*f32=*/true, stats);
  d.args.max_ctas_per_sm = max_ctas;
  const absl::Status st = cab::cuda::LaunchCoarsen(d.args, nullptr);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  Outputs o;
  o.maxl2.resize(d.elems);
  o.maxl2_bf16.resize(d.elems);
  o.best.resize(d.rows);
  o.count.resize(d.rows);
  EXPECT_EQ(cudaMemcpy(o.maxl2.data(), d.args.maxl2, d.elems * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(o.maxl2_bf16.data(), d.args.maxl2_bf16, d.elems * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(o.best.data(), d.args.best_norm2, d.rows * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(o.count.data(), d.args.count, d.rows * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  return o;
}

// The max-L2 row of block (h, m) from the input, by the SPEC's rule (largest squared norm summed in
// double, lowest index on ties): an independent host check of the representatives.
std::vector<float> HostMaxL2(const Shape& s, const std::vector<unsigned char>& bytes, int h, int m, float* norm2) {
  auto elem = [&](int64_t i) {
    if (s.dtype == DType::kF32) {
      float v;
      std::memcpy(&v, bytes.data() + 4 * i, 4);
      return v;
    }
    uint16_t b;
    std::memcpy(&b, bytes.data() + 2 * i, 2);
    const uint32_t w = static_cast<uint32_t>(b) << 16;
    float v;
    std::memcpy(&v, &w, 4);
    return v;
  };
  const int64_t first = static_cast<int64_t>(m) * s.block, end = std::min<int64_t>(first + s.block, s.tokens);
  float best = -1.f;
  int64_t at = first;
  for (int64_t t = first; t < end; ++t) {
    double n2 = 0;
    for (int d = 0; d < s.dim; ++d) {
      const double e = elem((static_cast<int64_t>(h) * s.tokens + t) * s.dim + d);
      n2 += e * e;
    }
    if (static_cast<float>(n2) > best) {
      best = static_cast<float>(n2);
      at = t;
    }
  }
  std::vector<float> row(s.dim);
  for (int d = 0; d < s.dim; ++d) row[d] = elem((static_cast<int64_t>(h) * s.tokens + at) * s.dim + d);
  *norm2 = best;
  return row;
}

TEST(CoarsenKernel, RepresentativesWithoutStatisticsMatch) {
  REQUIRE_CUDA_DEVICE();
  const Shape shapes[] = {
      {4, 1000, 128, 64, DType::kBF16},   // 16 lanes per token, partial last block
      {3, 4096, 128, 128, DType::kBF16},  // the benchmark's layout
      {2, 777, 64, 64, DType::kBF16},     // 8 lanes
      {2, 555, 256, 32, DType::kBF16},    // 32 lanes
      {2, 999, 128, 64, DType::kF32},     // 32 lanes of floats
      {2, 300, 32, 16, DType::kF32},      // 8 lanes of floats, small blocks
  };
  uint64_t seed = 7;
  for (const Shape& s : shapes) {
    SCOPED_TRACE("heads " + std::to_string(s.heads) + " tokens " + std::to_string(s.tokens) + " dim " +
                 std::to_string(s.dim) + " block " + std::to_string(s.block) +
                 (s.dtype == DType::kF32 ? " f32" : " bf16"));
    const std::vector<unsigned char> host = RandomInput(s, seed++);
    void* x = nullptr;
    ASSERT_EQ(cudaMalloc(&x, host.size()), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(x, host.data(), host.size(), cudaMemcpyHostToDevice), cudaSuccess);
    const Outputs full = LaunchAndCopy(s, x, /*stats=*/true, 0);
    const Outputs lean = LaunchAndCopy(s, x, /*stats=*/false, 0);
    const Outputs narrow = LaunchAndCopy(s, x, /*stats=*/false, 1);
    cudaFree(x);
    EXPECT_EQ(lean.maxl2, full.maxl2);
    EXPECT_EQ(lean.maxl2_bf16, full.maxl2_bf16);
    EXPECT_EQ(lean.best, full.best);
    EXPECT_EQ(lean.count, full.count);
    EXPECT_EQ(narrow.maxl2, lean.maxl2);
    EXPECT_EQ(narrow.best, lean.best);
    // Independent host check of every block's representative and best norm.
    const int M = (s.tokens + s.block - 1) / s.block;
    int wrong = 0;
    for (int h = 0; h < s.heads; ++h) {
      for (int m = 0; m < M; ++m) {
        float n2 = 0;
        const std::vector<float> want = HostMaxL2(s, host, h, m, &n2);
        const size_t row = static_cast<size_t>(h) * M + m;
        const std::vector<float> got(lean.maxl2.begin() + row * s.dim, lean.maxl2.begin() + (row + 1) * s.dim);
        if (got != want || lean.best[row] != n2) ++wrong;
        EXPECT_EQ(lean.count[row], std::min<int>(s.block, s.tokens - m * s.block));
      }
    }
    EXPECT_EQ(wrong, 0) << "of " << s.heads * M << " blocks";
  }
}

TEST(CoarsenKernel, QueriesAndKeysInOneLaunchMatchTwoLaunches) {
  REQUIRE_CUDA_DEVICE();
  struct Case {
    Shape q, k;
    bool k_stats;  // keys with Quest's bounds and the mean: two launches inside LaunchCoarsenPair
  };
  const Case cases[] = {
      {{4, 1000, 128, 64, DType::kBF16}, {2, 1000, 128, 64, DType::kBF16}, false},  // GQA, partial block
      {{8, 2048, 128, 128, DType::kBF16}, {8, 2048, 128, 128, DType::kBF16}, false},
      {{4, 1000, 128, 64, DType::kBF16}, {2, 1000, 128, 64, DType::kBF16}, true},
      {{2, 555, 64, 32, DType::kF32}, {1, 555, 64, 32, DType::kF32}, false},
      {{2, 300, 48, 32, DType::kF32}, {2, 300, 48, 32, DType::kF32}, false},  // 12 lanes: no streaming kernel
  };
  uint64_t seed = 100;
  for (const Case& c : cases) {
    SCOPED_TRACE("q heads " + std::to_string(c.q.heads) + " k heads " + std::to_string(c.k.heads) + " tokens " +
                 std::to_string(c.q.tokens) + " dim " + std::to_string(c.q.dim) + " block " +
                 std::to_string(c.q.block) + (c.k_stats ? " key statistics" : ""));
    const std::vector<unsigned char> hq = RandomInput(c.q, seed++), hk = RandomInput(c.k, seed++);
    void *q = nullptr, *k = nullptr;
    ASSERT_EQ(cudaMalloc(&q, hq.size()), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&k, hk.size()), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(q, hq.data(), hq.size(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(k, hk.data(), hk.size(), cudaMemcpyHostToDevice), cudaSuccess);
    {
      // The queries without fp32 copies (as the kernel bench asks), the keys with them.
      DeviceOutputs q1(c.q, q, false, false), k1(c.k, k, true, c.k_stats);
      DeviceOutputs q2(c.q, q, false, false), k2(c.k, k, true, c.k_stats);
      ASSERT_TRUE(cab::cuda::LaunchCoarsenPair(q1.args, k1.args, nullptr).ok());
      ASSERT_TRUE(cab::cuda::LaunchCoarsen(q2.args, nullptr).ok());
      ASSERT_TRUE(cab::cuda::LaunchCoarsen(k2.args, nullptr).ok());
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      EXPECT_TRUE(q1.Download() == q2.Download());
      EXPECT_TRUE(k1.Download() == k2.Download());
    }
    cudaFree(q);
    cudaFree(k);
  }
}

TEST(CoarsenKernel, RefusesLaunchesWithoutRepresentatives) {
  // Argument checks run before any device call: no GPU needed.
  CoarsenArgs a;
  a.dtype = DType::kBF16;
  a.batch = a.heads = 1;
  a.tokens = 64;
  a.dim = 128;
  a.block_size = 64;
  EXPECT_EQ(cab::cuda::LaunchCoarsen(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  CoarsenArgs b = a;
  b.block_size = 0;
  EXPECT_EQ(cab::cuda::LaunchCoarsenPair(a, b, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
