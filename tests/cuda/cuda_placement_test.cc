// Sessions pinned to one worker of the CUDA backend (kernels/cuda/device_placement.h), on a one-GPU
// host: "devices=0,0" makes two workers on device 0. Several sessions' calls spread over both
// workers, each session's calls always run on the same one (MaskResult::device), a released slot
// takes the next session, same-shape calls share a launch only on one worker, and every mask equals
// the CPU backend's. Skips without a GPU.
//
// Grid inputs (values k/64) make every score an exact fp32 sum, so masks must be bit-identical to the
// CPU's whichever worker or batch ran them.
#include <cstdio>
#include <map>
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

// kSessions sessions x kCalls calls, each call its own grid input of one shape (GQA g = 2).
constexpr int kSessions = 6, kCalls = 4;

std::vector<std::vector<Request>> MakeRequests(Backend& cpu) {
  std::vector<std::vector<Request>> out(kSessions);
  for (int s = 0; s < kSessions; ++s) {
    for (int c = 0; c < kCalls; ++c) {
      Input q = MakeInput({1, 4, 600, 32}, DType::kF32, 1000 + 10 * s + c, /*grid=*/true);
      Input k = MakeInput({1, 2, 600, 32}, DType::kF32, 2000 + 10 * s + c, /*grid=*/true);
      auto qc = cpu.Coarsen(q.view(), 16);
      auto kc = cpu.Coarsen(k.view(), 16);
      EXPECT_TRUE(qc.ok() && kc.ok());
      out[s].push_back({std::move(*qc), std::move(*kc)});
    }
  }
  return out;
}

MaskParams Params() {
  MaskParams p;
  p.policy = MaskPolicy::kCab;
  p.sparsity = 0.8f;
  return p;
}

void ExpectSameMask(const BlockMask& got, const BlockMask& want) {
  EXPECT_EQ(got.rows, want.rows);
  EXPECT_EQ(got.row_offsets, want.row_offsets);
  EXPECT_EQ(got.col_indices, want.col_indices);
}

TEST(CudaPlacement, SessionsSpreadOverTwoWorkersAndStayPinned) {
  REQUIRE_GPU();
  Plugin two = LoadPlugin("gemm=auto;devices=0,0");
  ASSERT_NE(two.backend, nullptr) << two.why;
  Backend& b = *two.backend;
  ASSERT_EQ(b.Devices().size(), 2u) << "devices=0,0 must make two workers";
  auto cpu = MakeCpuBackend({2});
  const auto reqs = MakeRequests(*cpu);
  const MaskParams p = Params();

  // First calls one after another: with nothing in flight, session s lands on worker s % 2.
  for (int s = 0; s < kSessions; ++s) {
    auto r = b.PredictMask(reqs[s][0].q, reqs[s][0].k, p, false, CallContext{static_cast<uint64_t>(s + 1)});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->device, s % 2) << "session " << s + 1;
  }
  // Then every session's calls from its own thread, all at once, plus session-less calls.
  std::vector<std::vector<absl::StatusOr<MaskResult>>> got(kSessions);
  std::vector<absl::StatusOr<MaskResult>> loose(kSessions, absl::InternalError("not run"));
  std::vector<std::thread> threads;
  for (int s = 0; s < kSessions; ++s) {
    threads.emplace_back([&, s] {
      for (int c = 0; c < kCalls; ++c) {
        got[s].push_back(b.PredictMask(reqs[s][c].q, reqs[s][c].k, p, false, CallContext{static_cast<uint64_t>(s + 1)}));
      }
      loose[s] = b.PredictMask(reqs[s][0].q, reqs[s][0].k, p, false);
    });
  }
  for (auto& t : threads) t.join();
  std::map<int, int> calls_per_worker;
  for (int s = 0; s < kSessions; ++s) {
    for (int c = 0; c < kCalls; ++c) {
      ASSERT_TRUE(got[s][c].ok()) << got[s][c].status();
      EXPECT_EQ(got[s][c]->device, s % 2) << "session " << s + 1 << " call " << c << " left its worker";
      ++calls_per_worker[got[s][c]->device];
      auto want = cpu->PredictMask(reqs[s][c].q, reqs[s][c].k, p, false);
      ASSERT_TRUE(want.ok());
      ExpectSameMask(got[s][c]->mask, want->mask);
    }
    ASSERT_TRUE(loose[s].ok()) << loose[s].status();
    EXPECT_TRUE(loose[s]->device == 0 || loose[s]->device == 1) << loose[s]->device;
    auto want = cpu->PredictMask(reqs[s][0].q, reqs[s][0].k, p, false);
    ExpectSameMask(loose[s]->mask, want->mask);
  }
  std::printf("session calls per worker: 0 -> %d, 1 -> %d\n", calls_per_worker[0], calls_per_worker[1]);
  EXPECT_EQ(calls_per_worker[0], kSessions / 2 * kCalls);
  EXPECT_EQ(calls_per_worker[1], kSessions / 2 * kCalls);

  // Releasing two sessions of worker 0 frees its slots: the next new session goes there.
  b.ReleaseSession(1);
  b.ReleaseSession(3);
  b.ReleaseSession(3);  // idempotent
  auto next = b.PredictMask(reqs[0][1].q, reqs[0][1].k, p, false, CallContext{100});
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->device, 0);
  // A policy answered by the embedded CPU backend reports no device.
  MaskParams random = p;
  random.policy = MaskPolicy::kRandom;
  auto cpu_answered = b.PredictMask(reqs[0][0].q, reqs[0][0].k, random, false, CallContext{2});
  ASSERT_TRUE(cpu_answered.ok()) << cpu_answered.status();
  EXPECT_EQ(cpu_answered->device, -1);
}

TEST(CudaPlacement, BatchesNeverMixWorkers) {
  REQUIRE_GPU();
  Plugin two = LoadPlugin("gemm=auto;devices=0,0;max_batch=8;max_queue_delay_us=50000");
  ASSERT_NE(two.backend, nullptr) << two.why;
  Backend& b = *two.backend;
  auto cpu = MakeCpuBackend({2});
  const auto reqs = MakeRequests(*cpu);
  const MaskParams p = Params();
  // Pin sessions 1..6 (alternating workers), then send one call per session at once: same shape,
  // so without the worker in the batch key they could share one launch.
  for (int s = 0; s < kSessions; ++s) {
    auto r = b.PredictMask(reqs[s][0].q, reqs[s][0].k, p, false, CallContext{static_cast<uint64_t>(s + 1)});
    ASSERT_TRUE(r.ok()) << r.status();
  }
  std::vector<absl::StatusOr<MaskResult>> got(kSessions, absl::InternalError("not run"));
  std::vector<std::thread> threads;
  for (int s = 0; s < kSessions; ++s) {
    threads.emplace_back([&, s] {
      got[s] = b.PredictMask(reqs[s][1].q, reqs[s][1].k, p, false, CallContext{static_cast<uint64_t>(s + 1)});
    });
  }
  for (auto& t : threads) t.join();
  // Requests of one launch share its stage times (as in cuda_batch_test).
  std::map<std::pair<double, double>, std::set<int>> workers_of_launch;
  for (int s = 0; s < kSessions; ++s) {
    ASSERT_TRUE(got[s].ok()) << got[s].status();
    EXPECT_EQ(got[s]->device, s % 2);
    workers_of_launch[{got[s]->graph_seconds, got[s]->select_seconds}].insert(got[s]->device);
    auto want = cpu->PredictMask(reqs[s][1].q, reqs[s][1].k, p, false);
    ASSERT_TRUE(want.ok());
    ExpectSameMask(got[s]->mask, want->mask);
  }
  std::printf("%zu launches for %d concurrent calls on 2 workers\n", workers_of_launch.size(), kSessions);
  for (const auto& [times, workers] : workers_of_launch) EXPECT_EQ(workers.size(), 1u) << "a launch mixed workers";
  EXPECT_GE(workers_of_launch.size(), 2u);
  EXPECT_LT(workers_of_launch.size(), static_cast<size_t>(kSessions)) << "no two calls of one worker shared a launch";
}

TEST(CudaPlacement, SessionFormsOfCoarsenAndEvictAnswerAsThePlainOnes) {
  REQUIRE_GPU();
  Plugin two = LoadPlugin("gemm=auto;devices=0,0");
  ASSERT_NE(two.backend, nullptr) << two.why;
  Backend& b = *two.backend;
  Input x = MakeInput({1, 2, 300, 32}, DType::kBF16, 7, false);
  auto plain = b.Coarsen(x.view(), 16);
  auto pinned = b.Coarsen(x.view(), 16, CallContext{9});
  ASSERT_TRUE(plain.ok() && pinned.ok());
  EXPECT_EQ(plain->maxl2, pinned->maxl2);
  EXPECT_EQ(plain->mean, pinned->mean);
  const TensorView kv = x.view();
  EvictInputs in;
  in.tokens = 300;
  in.keys = &kv;
  EvictParams ep;
  ep.policy = EvictPolicy::kCab;  // without scores: key norms and the key-block graph
  ep.keep = 100;
  ep.block_size = 16;
  auto e_plain = b.Evict(in, ep);
  auto e_pinned = b.Evict(in, ep, CallContext{9});
  ASSERT_TRUE(e_plain.ok()) << e_plain.status();
  ASSERT_TRUE(e_pinned.ok()) << e_pinned.status();
  EXPECT_EQ(e_plain->indices, e_pinned->indices);
  b.ReleaseSession(9);
}

}  // namespace
}  // namespace cab
