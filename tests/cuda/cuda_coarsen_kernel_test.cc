// The coarsening kernel called directly (label gpu): a launch that asks only for the max-L2
// representatives (no mean, no Quest bounds: the inner loop without channel statistics) must give the
// same representatives, bf16 copies, best norms and counts as a launch that asks for everything, whose
// outputs CudaBackend.CoarsenMatchesCpu compares with the CPU backend. Also checks that the pipeline
// knob (max_ctas_per_sm) changes nothing but the grid, and that coarsening the queries and the keys in
// one launch (LaunchCoarsenPair) writes what two launches write, and that warps claiming blocks from a
// counter (CoarsenArgs::work_counter) write what fixed shares write and leave the counter zeroed, and
// that a launch in parts counts each part's finished blocks so that a stream waiting on a count
// (EnqueueWaitAtLeast) reads that part's finished outputs, also from a stream limited to part of
// the SMs (CreatePartitionStream). Skips with the reason where no GPU
// exists.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "coarsen_kernel.h"
#include "sm_partition.h"
#include "stream_wait.h"
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

TEST(CoarsenKernel, ClaimedBlocksMatchFixedShares) {
  REQUIRE_CUDA_DEVICE();
  struct Case {
    Shape s;
    bool stats;
    int max_ctas;
  };
  // An H100 holds 1056 warps of this kernel at one CTA per SM, 2112 at two: the shapes with more
  // blocks than that make warps claim; the small one only exercises the exit count.
  const Case cases[] = {
      {{16, 16384, 128, 128, DType::kBF16}, false, 1},  // the pipeline's launch: one CTA per SM
      {{8, 20000, 128, 64, DType::kBF16}, true, 1},     // partial block, channel statistics
      {{8, 8192, 32, 16, DType::kF32}, true, 0},        // small blocks: many claims per warp
      {{32, 8192, 128, 64, DType::kBF16}, false, 0},    // two CTAs per SM
      {{3, 999, 128, 64, DType::kF32}, false, 0},       // fewer blocks than warps: no claims
  };
  uint32_t* counter = nullptr;
  ASSERT_EQ(cudaMalloc(&counter, 2 * sizeof(uint32_t)), cudaSuccess);
  ASSERT_EQ(cudaMemset(counter, 0, 2 * sizeof(uint32_t)), cudaSuccess);
  uint64_t seed = 300;
  for (const Case& c : cases) {
    const Shape& s = c.s;
    SCOPED_TRACE("heads " + std::to_string(s.heads) + " tokens " + std::to_string(s.tokens) + " block " +
                 std::to_string(s.block) + (c.stats ? " statistics" : "") + " ctas/SM " + std::to_string(c.max_ctas));
    const std::vector<unsigned char> host = RandomInput(s, seed++);
    void* x = nullptr;
    ASSERT_EQ(cudaMalloc(&x, host.size()), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(x, host.data(), host.size(), cudaMemcpyHostToDevice), cudaSuccess);
    DeviceOutputs fixed(s, x, true, c.stats);
    fixed.args.max_ctas_per_sm = c.max_ctas;
    ASSERT_TRUE(cab::cuda::LaunchCoarsen(fixed.args, nullptr).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto want = fixed.Download();
    // Three launches in a row on one counter: each must find it zeroed by the one before.
    for (int round = 0; round < 3; ++round) {
      DeviceOutputs claimed(s, x, true, c.stats);
      claimed.args.max_ctas_per_sm = c.max_ctas;
      claimed.args.work_counter = counter;
      ASSERT_TRUE(cab::cuda::LaunchCoarsen(claimed.args, nullptr).ok());
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      EXPECT_TRUE(claimed.Download() == want) << "round " << round;
      uint32_t left[2] = {1, 1};
      ASSERT_EQ(cudaMemcpy(left, counter, sizeof(left), cudaMemcpyDeviceToHost), cudaSuccess);
      EXPECT_EQ(left[0], 0u);
      EXPECT_EQ(left[1], 0u);
    }
    // The queries and the keys in one launch on the same counter.
    DeviceOutputs q(s, x, false, false), k(s, x, true, false);
    q.args.work_counter = k.args.work_counter = counter;
    ASSERT_TRUE(cab::cuda::LaunchCoarsenPair(q.args, k.args, nullptr).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_TRUE(k.Download()[1] == want[1]);  // the bf16 representatives
    EXPECT_TRUE(q.Download()[1] == want[1]);
    cudaFree(x);
  }
  cudaFree(counter);
}

TEST(CoarsenKernel, PartsAreCountedAndReleaseAWaitingStream) {
  REQUIRE_CUDA_DEVICE();
  // Queries with 16 heads and keys with 4 (GQA) in 4 parts: part g is query heads 4g..4g+3 and key
  // head g. Large enough that parts finish at different times.
  const Shape qs{16, 16384, 128, 128, DType::kBF16}, ks{4, 16384, 128, 128, DType::kBF16};
  constexpr int kParts = 4;
  const std::vector<unsigned char> hq = RandomInput(qs, 501), hk = RandomInput(ks, 502);
  void *q = nullptr, *k = nullptr;
  ASSERT_EQ(cudaMalloc(&q, hq.size()), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&k, hk.size()), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(q, hq.data(), hq.size(), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(k, hk.data(), hk.size(), cudaMemcpyHostToDevice), cudaSuccess);
  DeviceOutputs q1(qs, q, false, false), k1(ks, k, false, false);
  ASSERT_TRUE(cab::cuda::LaunchCoarsenPair(q1.args, k1.args, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const auto want_q = q1.Download(), want_k = k1.Download();

  uint32_t *counter = nullptr, *done = nullptr;
  ASSERT_EQ(cudaMalloc(&counter, 2 * sizeof(uint32_t)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&done, kParts * sizeof(uint32_t)), cudaSuccess);
  ASSERT_EQ(cudaMemset(counter, 0, 2 * sizeof(uint32_t)), cudaSuccess);
  ASSERT_EQ(cudaMemset(done, 0, kParts * sizeof(uint32_t)), cudaSuccess);
  cudaStream_t producer, consumer;
  ASSERT_EQ(cudaStreamCreateWithFlags(&producer, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&consumer, cudaStreamNonBlocking), cudaSuccess);
  DeviceOutputs q2(qs, q, false, false), k2(ks, k, false, false);
  q2.args.work_counter = counter;
  q2.args.groups = kParts;
  q2.args.group_done = done;
  const int M = q2.args.blocks();
  const size_t q_part = q2.elems / kParts, k_part = k2.elems / kParts;  // bf16 values per part
  std::vector<uint16_t> copied_q(q2.elems), copied_k(k2.elems);
  ASSERT_TRUE(cab::cuda::LaunchCoarsenPair(q2.args, k2.args, producer).ok());
  // The consumer copies each part's representatives as soon as its count says it is finished.
  for (int g = 0; g < kParts; ++g) {
    ASSERT_TRUE(cab::cuda::EnqueueWaitAtLeast(consumer, done + g, static_cast<uint32_t>((4 + 1) * M)).ok());
    ASSERT_EQ(cudaMemcpyAsync(copied_q.data() + g * q_part, q2.args.maxl2_bf16 + g * q_part, q_part * 2,
                              cudaMemcpyDeviceToHost, consumer), cudaSuccess);
    ASSERT_EQ(cudaMemcpyAsync(copied_k.data() + g * k_part, k2.args.maxl2_bf16 + g * k_part, k_part * 2,
                              cudaMemcpyDeviceToHost, consumer), cudaSuccess);
  }
  ASSERT_EQ(cudaStreamSynchronize(consumer), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(producer), cudaSuccess);
  std::vector<unsigned char> got_q(copied_q.size() * 2), got_k(copied_k.size() * 2);
  std::memcpy(got_q.data(), copied_q.data(), got_q.size());
  std::memcpy(got_k.data(), copied_k.data(), got_k.size());
  EXPECT_TRUE(got_q == want_q[1]);
  EXPECT_TRUE(got_k == want_k[1]);
  EXPECT_TRUE(q2.Download() == want_q);
  EXPECT_TRUE(k2.Download() == want_k);
  uint32_t counts[kParts] = {};
  ASSERT_EQ(cudaMemcpy(counts, done, sizeof(counts), cudaMemcpyDeviceToHost), cudaSuccess);
  for (int g = 0; g < kParts; ++g) EXPECT_EQ(counts[g], static_cast<uint32_t>(5 * M)) << "part " << g;

  // Unequal parts (a pipeline that ends on small ones): 8 + 4 + 4 query heads, so 2 + 1 + 1 key
  // heads; each part is released when its own blocks are counted.
  {
    ASSERT_EQ(cudaMemset(done, 0, kParts * sizeof(uint32_t)), cudaSuccess);
    DeviceOutputs qu(qs, q, false, false), ku(ks, k, false, false);
    qu.args.work_counter = counter;
    qu.args.groups = 3;
    qu.args.group_done = done;
    const int rows[3] = {8, 4, 4};
    for (int g = 0; g < 3; ++g) qu.args.part_rows[g] = rows[g];
    ASSERT_TRUE(cab::cuda::LaunchCoarsenPair(qu.args, ku.args, producer).ok());
    std::vector<uint16_t> part_q(qu.elems), part_k(ku.elems);
    const size_t per_head_q = qu.elems / 16, per_head_k = ku.elems / 4;
    int q0 = 0;
    for (int g = 0; g < 3; ++g) {
      const int nq = rows[g], nk = rows[g] / 4, k0 = q0 / 4;
      ASSERT_TRUE(cab::cuda::EnqueueWaitAtLeast(consumer, done + g, static_cast<uint32_t>((nq + nk) * M)).ok());
      ASSERT_EQ(cudaMemcpyAsync(part_q.data() + q0 * per_head_q, qu.args.maxl2_bf16 + q0 * per_head_q,
                                nq * per_head_q * 2, cudaMemcpyDeviceToHost, consumer), cudaSuccess);
      ASSERT_EQ(cudaMemcpyAsync(part_k.data() + k0 * per_head_k, ku.args.maxl2_bf16 + k0 * per_head_k,
                                nk * per_head_k * 2, cudaMemcpyDeviceToHost, consumer), cudaSuccess);
      q0 += nq;
    }
    ASSERT_EQ(cudaStreamSynchronize(consumer), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(producer), cudaSuccess);
    std::vector<unsigned char> bytes_q(part_q.size() * 2), bytes_k(part_k.size() * 2);
    std::memcpy(bytes_q.data(), part_q.data(), bytes_q.size());
    std::memcpy(bytes_k.data(), part_k.data(), bytes_k.size());
    EXPECT_TRUE(bytes_q == want_q[1]);
    EXPECT_TRUE(bytes_k == want_k[1]);
    uint32_t unequal[3] = {};
    ASSERT_EQ(cudaMemcpy(unequal, done, sizeof(unequal), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(unequal[0], static_cast<uint32_t>(10 * M));
    EXPECT_EQ(unequal[1], static_cast<uint32_t>(5 * M));
    EXPECT_EQ(unequal[2], static_cast<uint32_t>(5 * M));
    // Refused: a part that would split a key head (6 query heads = 1.5 key heads), and sizes that
    // do not add up to the rows.
    DeviceOutputs qb(qs, q, false, false), kb(ks, k, false, false);
    qb.args.work_counter = counter;
    qb.args.group_done = done;
    qb.args.groups = 2;
    qb.args.part_rows[0] = 6;
    qb.args.part_rows[1] = 10;
    EXPECT_EQ(cab::cuda::LaunchCoarsenPair(qb.args, kb.args, producer).code(), absl::StatusCode::kInvalidArgument);
    qb.args.part_rows[0] = 8;
    qb.args.part_rows[1] = 4;
    EXPECT_EQ(cab::cuda::LaunchCoarsenPair(qb.args, kb.args, producer).code(), absl::StatusCode::kInvalidArgument);
  }

  // Parts the launch cannot honour are refused before anything runs: rows not divisible, no work
  // counter, and a shape only the non-streaming kernel takes (12 lanes of floats).
  DeviceOutputs q3(qs, q, false, false), k3(ks, k, false, false);
  q3.args.groups = 3;
  q3.args.group_done = done;
  q3.args.work_counter = counter;
  EXPECT_EQ(cab::cuda::LaunchCoarsenPair(q3.args, k3.args, producer).code(), absl::StatusCode::kInvalidArgument);
  q3.args.groups = kParts;
  q3.args.work_counter = nullptr;
  EXPECT_EQ(cab::cuda::LaunchCoarsenPair(q3.args, k3.args, producer).code(), absl::StatusCode::kInvalidArgument);
  const Shape odd{2, 300, 48, 32, DType::kF32};
  DeviceOutputs o(odd, q, false, false);
  o.args.groups = 2;
  o.args.group_done = done;
  o.args.work_counter = counter;
  EXPECT_EQ(cab::cuda::LaunchCoarsen(o.args, producer).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaStreamDestroy(producer);
  cudaStreamDestroy(consumer);
  cudaFree(counter);
  cudaFree(done);
  cudaFree(q);
  cudaFree(k);
}

TEST(CoarsenKernel, PartitionStreamsRunOnTheirShareOfSms) {
  REQUIRE_CUDA_DEVICE();
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  cab::cuda::PartitionStream rest;
  auto part = cab::cuda::CreatePartitionStream(0, sms / 3, &rest);
  if (part.status().code() == absl::StatusCode::kUnimplemented) GTEST_SKIP() << part.status();
  ASSERT_TRUE(part.ok()) << part.status();
  EXPECT_GE(part->sms, sms / 3);
  EXPECT_GE(rest.sms, 1);
  EXPECT_LE(part->sms + rest.sms, sms);
  EXPECT_EQ(cab::cuda::CreatePartitionStream(0, sms).status().code(), absl::StatusCode::kInvalidArgument);

  // The coarsening on the small part with claimed blocks (its grid has more CTAs than fit there),
  // and a waiting stream on the rest: the same outputs as a plain launch.
  const Shape s{8, 8192, 128, 64, DType::kBF16};
  const std::vector<unsigned char> host = RandomInput(s, 700);
  void* x = nullptr;
  ASSERT_EQ(cudaMalloc(&x, host.size()), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(x, host.data(), host.size(), cudaMemcpyHostToDevice), cudaSuccess);
  DeviceOutputs plain(s, x, true, false);
  ASSERT_TRUE(cab::cuda::LaunchCoarsen(plain.args, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  uint32_t *counter = nullptr, *done = nullptr;
  ASSERT_EQ(cudaMalloc(&counter, 2 * sizeof(uint32_t)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&done, 2 * sizeof(uint32_t)), cudaSuccess);
  ASSERT_EQ(cudaMemset(counter, 0, 2 * sizeof(uint32_t)), cudaSuccess);
  ASSERT_EQ(cudaMemset(done, 0, 2 * sizeof(uint32_t)), cudaSuccess);
  DeviceOutputs parted(s, x, true, false);
  parted.args.work_counter = counter;
  parted.args.groups = 2;
  parted.args.group_done = done;
  ASSERT_TRUE(cab::cuda::LaunchCoarsen(parted.args, part->stream).ok());
  const size_t half = parted.rows / 2;
  std::vector<float> second_half(half);
  ASSERT_TRUE(cab::cuda::EnqueueWaitAtLeast(rest.stream, done + 1, static_cast<uint32_t>(half)).ok());
  ASSERT_EQ(cudaMemcpyAsync(second_half.data(), parted.args.best_norm2 + half, half * 4, cudaMemcpyDeviceToHost,
                            rest.stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(rest.stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(part->stream), cudaSuccess);
  EXPECT_TRUE(parted.Download() == plain.Download());
  std::vector<float> want(half);
  ASSERT_EQ(cudaMemcpy(want.data(), plain.args.best_norm2 + half, half * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(second_half, want);
  cudaFree(counter);
  cudaFree(done);
  cudaFree(x);
  cab::cuda::DestroyPartitionStream(&*part);
  cab::cuda::DestroyPartitionStream(&rest);
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
