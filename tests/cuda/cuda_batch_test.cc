// PredictMask batching of the CUDA backend (kernels/cuda/predict_batcher.h): same-shape requests
// issued together from several threads get the same masks as the same requests issued one after
// another, and they do share launches. Skips without a GPU.
//
// Grid inputs (values k/64) make every score an exact fp32 sum, so a batched launch (where cuBLAS
// may pick another kernel for the larger batch) must give bit-identical masks; continuous inputs may
// break a rounding near-tie differently and are bounded (<= 1% of rows).
#include <cstdio>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "cab/backend.h"
#include "gtest/gtest.h"
#include "plugin_fixture.h"

namespace cab {
namespace {

struct Request {
  CoarseBlocks q, k;
};

int64_t RowsDiffer(const BlockMask& a, const BlockMask& b) {
  if (a.row_offsets.size() != b.row_offsets.size()) return static_cast<int64_t>(a.row_offsets.size());
  int64_t differ = 0;
  for (size_t r = 0; r + 1 < a.row_offsets.size(); ++r) {
    const std::vector<int32_t> x(a.col_indices.begin() + a.row_offsets[r], a.col_indices.begin() + a.row_offsets[r + 1]);
    const std::vector<int32_t> y(b.col_indices.begin() + b.row_offsets[r], b.col_indices.begin() + b.row_offsets[r + 1]);
    differ += x != y;
  }
  return differ;
}

TEST(CudaBatch, ConcurrentSameShapeRequestsMatchSequential) {
  REQUIRE_GPU();
  Plugin batched = LoadPlugin("gemm=auto;max_batch=4;max_queue_delay_us=50000");
  ASSERT_NE(batched.backend, nullptr) << batched.why;
  auto cpu = MakeCpuBackend({2});
  for (bool grid : {true, false}) {
    for (MaskPolicy policy : {MaskPolicy::kCab, MaskPolicy::kMagnitude, MaskPolicy::kQuest}) {
      SCOPED_TRACE(std::string(grid ? "grid " : "normal ") + Name(policy));
      // 8 requests of one shape (GQA g = 2, N not a multiple of the block), different contents.
      const int kRequests = 8;
      std::vector<Request> reqs(kRequests);
      for (int i = 0; i < kRequests; ++i) {
        Input q = MakeInput({1, 4, 700, 32}, DType::kF32, 100 + i, grid);
        Input k = MakeInput({1, 2, 700, 32}, DType::kF32, 200 + i, grid);
        auto qc = cpu->Coarsen(q.view(), 16);
        auto kc = cpu->Coarsen(k.view(), 16);
        ASSERT_TRUE(qc.ok() && kc.ok());
        reqs[i] = {std::move(*qc), std::move(*kc)};
      }
      MaskParams p;
      p.policy = policy;
      p.sparsity = 0.8f;
      std::vector<BlockMask> sequential;
      for (const Request& r : reqs) {
        auto m = gpu->PredictMask(r.q, r.k, p, false);
        ASSERT_TRUE(m.ok()) << m.status();
        sequential.push_back(std::move(m->mask));
      }
      std::vector<absl::StatusOr<MaskResult>> together(kRequests, absl::InternalError("not run"));
      std::vector<std::thread> threads;
      for (int i = 0; i < kRequests; ++i) {
        threads.emplace_back([&, i] { together[i] = batched.backend->PredictMask(reqs[i].q, reqs[i].k, p, false); });
      }
      for (auto& t : threads) t.join();
      int64_t rows = 0, differ = 0;
      std::set<std::pair<double, double>> launches;  // requests of one launch share its stage times
      for (int i = 0; i < kRequests; ++i) {
        ASSERT_TRUE(together[i].ok()) << together[i].status();
        const BlockMask& got = together[i]->mask;
        EXPECT_EQ(got.batch, 1);
        EXPECT_EQ(got.heads, 4);
        EXPECT_EQ(got.rows, sequential[i].rows);
        rows += got.rows * 4;
        differ += RowsDiffer(got, sequential[i]);
        launches.insert({together[i]->graph_seconds, together[i]->select_seconds});
      }
      std::printf("%s %s: %lld of %lld rows differ; %zu launches for %d requests\n", grid ? "grid" : "normal",
                  Name(policy).c_str(), static_cast<long long>(differ), static_cast<long long>(rows), launches.size(),
                  kRequests);
      if (grid) {
        EXPECT_EQ(differ, 0);
      } else {
        EXPECT_LE(differ, rows / 100);
      }
      EXPECT_LT(launches.size(), static_cast<size_t>(kRequests)) << "no two concurrent requests shared a launch";
    }
  }
}

// Without batching, requests on one worker run one at a time but overlap: one's staging and upload
// (copy stream, input slot) with another's kernels (compute stream). Many threads, three shapes (so
// a slot's buffers grow while the other slot is in use), representatives and coarse states mixed,
// Coarsen and Graph calls in between (they take the worker whole): every mask must equal the same
// request's mask run alone.
TEST(CudaBatch, ConcurrentUnbatchedRequestsMatchSequential) {
  REQUIRE_GPU();
  auto cpu = MakeCpuBackend({2});
  struct Job {
    Input q, k;
    int block;
    int64_t tokens;
    bool reps;
    BlockMask alone;
  };
  std::vector<Job> jobs;
  const int64_t blocks[3] = {40, 300, 90};
  for (int i = 0; i < 12; ++i) {
    const int64_t m = blocks[i % 3];
    jobs.push_back({MakeInput({1, 4, m, 64}, DType::kBF16, 300 + i, false),
                    MakeInput({1, 2, m, 64}, DType::kBF16, 400 + i, false), 64, m * 64 - (i % 5), i % 2 == 0, {}});
  }
  MaskParams p;
  p.sparsity = 0.9f;
  auto run = [&](Backend& b, const Job& j) -> absl::StatusOr<MaskResult> {
    RepresentativeInputs in;
    in.q = j.q.view();
    in.k = j.k.view();
    in.block_size = j.block;
    in.tokens = j.tokens;
    if (j.reps) return b.PredictMaskFromRepresentatives(in, p, false, CallContext{});
    auto qc = CoarseFromRepresentatives(in.q, nullptr, nullptr, j.block, j.tokens);
    auto kc = CoarseFromRepresentatives(in.k, nullptr, nullptr, j.block, j.tokens);
    if (!qc.ok() || !kc.ok()) return absl::InternalError("coarse state");
    return b.PredictMask(*qc, *kc, p, false);
  };
  for (Job& j : jobs) {
    auto r = run(*gpu, j);
    ASSERT_TRUE(r.ok()) << r.status();
    j.alone = std::move(r->mask);
  }
  const Input x = MakeInput({1, 2, 500, 64}, DType::kBF16, 9, false);
  auto x_cpu = cpu->Coarsen(x.view(), 32);
  auto x_alone = gpu->Coarsen(x.view(), 32);
  ASSERT_TRUE(x_cpu.ok() && x_alone.ok());
  std::vector<absl::StatusOr<MaskResult>> got(jobs.size(), absl::InternalError("not run"));
  std::vector<std::string> side_errors(4);
  std::vector<std::thread> threads;
  for (int round = 0; round < 3; ++round) {
    threads.clear();
    for (size_t i = 0; i < jobs.size(); ++i) threads.emplace_back([&, i] { got[i] = run(*gpu, jobs[i]); });
    threads.emplace_back([&] {  // whole-worker ops in between
      auto c = gpu->Coarsen(x.view(), 32);
      if (!c.ok() || c->maxl2 != x_alone->maxl2) side_errors[0] = c.ok() ? "coarsen differs" : std::string(c.status().message());
      auto g = gpu->Graph(*x_cpu, *x_cpu, 0, 1, Coarsening::kMaxL2, GraphParams{});
      if (!g.ok()) side_errors[1] = std::string(g.status().message());
    });
    for (auto& t : threads) t.join();
    for (size_t i = 0; i < jobs.size(); ++i) {
      ASSERT_TRUE(got[i].ok()) << "round " << round << " job " << i << ": " << got[i].status();
      EXPECT_EQ(got[i]->mask.row_offsets, jobs[i].alone.row_offsets) << "round " << round << " job " << i;
      EXPECT_EQ(got[i]->mask.col_indices, jobs[i].alone.col_indices) << "round " << round << " job " << i;
    }
    for (const std::string& e : side_errors) EXPECT_EQ(e, "") << "round " << round;
  }
}

TEST(CudaBatch, BadBatchOptionsAreRefused) {
  REQUIRE_GPU();
  Plugin bad = LoadPlugin("max_batch=0");
  EXPECT_EQ(bad.backend, nullptr);
  EXPECT_NE(bad.why.find("max_batch"), std::string::npos) << bad.why;
  Plugin bad_delay = LoadPlugin("max_queue_delay_us=-1");
  EXPECT_EQ(bad_delay.backend, nullptr);
  EXPECT_NE(bad_delay.why.find("max_queue_delay_us"), std::string::npos) << bad_delay.why;
}

}  // namespace
}  // namespace cab
