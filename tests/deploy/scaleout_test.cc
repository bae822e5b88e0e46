// Scale-out: three cab-server replicas on loopback behind one client target (an address list with
// round_robin). A steady load of unary Predict calls and streaming sessions runs while one
// replica is stopped with SIGTERM (drain) and then another with SIGKILL (crash). Checks:
//  - requests spread across the three replicas (each replica's own cab_requests_total);
//  - every unary call succeeds (retries on UNAVAILABLE hide the dead replicas) and every answer
//    equals the mask the CPU backend computes here for the same input;
//  - sessions keep working: every acknowledged chunk is still part of the session afterwards
//    (the final mask equals the reference over all acknowledged tokens), streams reopen;
//  - the drained replica exits 0.
// It prints what the client saw, phase by phase. Bounded: every wait has a time limit and the
// load loops stop by themselves.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_join.h"
#include "cab/backend.h"
#include "cab/client.h"
#include "gtest/gtest.h"
#include "replica_process.h"

namespace {

using cab::deploy_test::ReplicaProcess;
using Clock = std::chrono::steady_clock;

constexpr int kHeads = 2, kKvHeads = 1, kDim = 16, kBlock = 16;
constexpr int kUnaryTokens = 256;     // M = 16 blocks per unary request
constexpr int kSessionChunks = 200;   // appends go on through every phase
constexpr int kUnaryThreads = 2, kSessions = 3, kCases = 8;

cab::FloatTensor Random(std::vector<int64_t> shape, uint64_t seed) {
  cab::FloatTensor t;
  t.shape = std::move(shape);
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  t.data.resize(static_cast<size_t>(n));
  for (float& x : t.data) x = normal(rng);
  return t;
}

cab::MaskParams Params() {
  cab::MaskParams p;
  p.policy = cab::MaskPolicy::kCab;
  p.sparsity = 0.5f;
  p.graph.degree = 4;
  return p;
}

// The mask the CPU backend computes for q/k: what every replica must answer.
cab::BlockMask Reference(cab::Backend& backend, const cab::FloatTensor& q, const cab::FloatTensor& k) {
  auto qc = backend.Coarsen(q.view(), kBlock);
  auto kc = backend.Coarsen(k.view(), kBlock);
  EXPECT_TRUE(qc.ok() && kc.ok());
  auto r = backend.PredictMask(*qc, *kc, Params(), false);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->mask : cab::BlockMask{};
}

bool SameMask(const cab::BlockMask& a, const cab::BlockMask& b) {
  return a.rows == b.rows && a.cols == b.cols && a.row_offsets == b.row_offsets && a.col_indices == b.col_indices;
}

// [1, H, n, D] slice [t0, t0 + n) of a [1, H, N, D] tensor.
cab::FloatTensor Slice(const cab::FloatTensor& x, int64_t t0, int64_t n) {
  cab::FloatTensor out;
  out.shape = {1, x.shape[1], n, kDim};
  for (int64_t h = 0; h < x.shape[1]; ++h) {
    const float* src = x.data.data() + (h * x.shape[2] + t0) * kDim;
    out.data.insert(out.data.end(), src, src + n * kDim);
  }
  return out;
}

// What the client saw, per phase (0: all replicas up, 1: after SIGTERM, 2: after SIGKILL).
struct Observed {
  std::mutex mu;
  int unary_ok[3] = {}, unary_failed[3] = {}, unary_wrong[3] = {};
  double unary_max_ms[3] = {};
  int unary_cancelled_in_drain = 0;  // CANCELLED while replica0 drained (not retried by the client)
  int session_steps[3] = {}, session_failed[3] = {}, session_wrong[3] = {};
  std::map<std::string, int> errors;  // "phase N method: status" -> count

  Clock::time_point phase_start[3];
  void Error(int phase, const std::string& what, const absl::Status& s) {
    int ms = static_cast<int>(std::chrono::duration<double, std::milli>(Clock::now() - phase_start[phase]).count());
    errors["phase " + std::to_string(phase) + " " + what + ": " + std::string(absl::StatusCodeToString(s.code())) +
           ": " + std::string(s.message()).substr(0, 160)]++;
    std::printf("  (client: %s failed %d ms into phase %d: %s)\n", what.c_str(), ms, phase, s.ToString().c_str());
  }
};

struct SessionResult {
  int64_t acked_tokens = 0;
  int64_t held_tokens = 0;
  int reconnects = 0;
  std::vector<std::string> session_ids;
  bool final_mask_ok = false;
  std::string final_error;
};

class ScaleOut : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/cab-scaleout-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    workdir_ = dir;
    for (int i = 0; i < 3; ++i) {
      replicas_.push_back(std::make_unique<ReplicaProcess>("replica" + std::to_string(i), CAB_SERVER, workdir_));
      absl::Status s = replicas_.back()->Start(
          {"--backend=cpu", "--threads=1", "--drain_grace_s=3", "--session_idle_timeout_s=120"}, 30);
      ASSERT_TRUE(s.ok()) << s;
    }
  }

  // Requests per method on one replica (all codes), from its own /metrics.
  double Requests(int i, const std::string& method) {
    auto text = replicas_[i]->Scrape();
    return text.ok() ? cab::deploy_test::SumSamples(*text, "cab_requests_total", {{"method", method}}) : -1;
  }
  double Gauge(int i, const std::string& name) {
    auto text = replicas_[i]->Scrape();
    return text.ok() ? cab::deploy_test::SumSamples(*text, name) : -1;
  }

  void Run(int chunk_tokens);

  std::string workdir_;
  std::vector<std::unique_ptr<ReplicaProcess>> replicas_;
};

// chunk_tokens: tokens per session chunk. A multiple of the block size keeps a replayed session
// streaming whole blocks; otherwise the client resynchronises (reopens and replays) at every
// request after a failover (see cab/session.h).
void ScaleOut::Run(int chunk_tokens) {
  const int kChunkTokens = chunk_tokens;
  const int kSessionMaxTokens = kSessionChunks * chunk_tokens;
  std::vector<std::string> addresses;
  for (auto& r : replicas_) addresses.push_back(r->address());
  cab::ClientOptions options;
  options.target = absl::StrJoin(addresses, ",");
  options.load_balancing_policy = "round_robin";
  options.max_attempts = 5;
  options.default_deadline = absl::Seconds(20);
  options.session_reconnects = 5;
  auto client_or = cab::Client::Create(options);
  ASSERT_TRUE(client_or.ok()) << client_or.status();
  std::unique_ptr<cab::Client> client = std::move(*client_or);
  std::printf("client target: %s\n", options.target.c_str());

  // Inputs and the masks every replica must answer for them.
  auto backend = cab::MakeCpuBackend();
  std::vector<cab::FloatTensor> qs, ks;
  std::vector<cab::BlockMask> expected;
  for (int c = 0; c < kCases; ++c) {
    qs.push_back(Random({1, kHeads, kUnaryTokens, kDim}, 100 + c));
    ks.push_back(Random({1, kKvHeads, kUnaryTokens, kDim}, 200 + c));
    expected.push_back(Reference(*backend, qs.back(), ks.back()));
  }

  std::atomic<int> phase{0};
  std::atomic<bool> stop{false};
  Observed seen;
  seen.phase_start[0] = Clock::now();
  const auto hard_end = Clock::now() + std::chrono::seconds(150);  // the loops end by themselves
  auto over = [&] { return stop.load() || Clock::now() > hard_end; };

  std::vector<std::thread> threads;
  for (int t = 0; t < kUnaryThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; !over() && i < 20000; i += kUnaryThreads) {
        int c = i % kCases;
        cab::PredictInput in;
        in.block_size = kBlock;
        in.params = Params();
        in.q = qs[c].view();
        in.k = ks[c].view();
        auto t0 = Clock::now();
        auto reply = client->Predict(in);
        double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        int ph = phase.load();  // the phase the call ended in
        std::lock_guard<std::mutex> lock(seen.mu);
        if (!reply.ok() && ph == 1 && reply.status().code() == absl::StatusCode::kCancelled) {
          seen.unary_cancelled_in_drain++;  // known issue, see below
          seen.Error(ph, "Predict", reply.status());
        } else if (!reply.ok()) {
          seen.unary_failed[ph]++;
          seen.Error(ph, "Predict", reply.status());
        } else if (!SameMask(reply->mask, expected[c])) {
          seen.unary_wrong[ph]++;
        } else {
          seen.unary_ok[ph]++;
        }
        seen.unary_max_ms[ph] = std::max(seen.unary_max_ms[ph], ms);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  }

  std::vector<SessionResult> results(kSessions);
  for (int s = 0; s < kSessions; ++s) {
    threads.emplace_back([&, s] {
      SessionResult& res = results[s];
      cab::FloatTensor q = Random({1, kHeads, kSessionMaxTokens, kDim}, 1000 + s);
      cab::FloatTensor k = Random({1, kKvHeads, kSessionMaxTokens, kDim}, 2000 + s);
      cab::SessionOptions so;
      so.layers = 1;
      so.heads = kHeads;
      so.kv_heads = kKvHeads;
      so.head_dim = kDim;
      so.block_size = kBlock;
      so.params = Params();
      auto session_or = client->OpenSession(so);
      if (!session_or.ok()) {
        res.final_error = "OpenSession: " + session_or.status().ToString();
        return;
      }
      std::unique_ptr<cab::Session> session = std::move(*session_or);
      res.session_ids.push_back(session->session_id());
      while (!over()) {
        int ph = phase.load();
        if (res.acked_tokens < kSessionMaxTokens) {
          cab::FloatTensor qc = Slice(q, res.acked_tokens, kChunkTokens);
          cab::FloatTensor kc = Slice(k, res.acked_tokens, kChunkTokens);
          absl::Status st = session->Append(0, qc.view(), kc.view());
          if (st.ok()) {
            res.acked_tokens += kChunkTokens;
          } else {
            std::lock_guard<std::mutex> lock(seen.mu);
            seen.session_failed[ph]++;
            seen.Error(ph, "Session.Append", st);
          }
        }
        auto mask = session->Mask(0);
        bool good = false;
        if (mask.ok()) {
          cab::BlockMask want = Reference(*backend, Slice(q, 0, res.acked_tokens), Slice(k, 0, res.acked_tokens));
          good = SameMask(mask->mask, want);
        }
        {
          std::lock_guard<std::mutex> lock(seen.mu);
          if (!mask.ok()) {
            seen.session_failed[ph]++;
            seen.Error(ph, "Session.Mask", mask.status());
          } else if (!good) {
            seen.session_wrong[ph]++;
          } else {
            seen.session_steps[ph]++;
          }
        }
        if (res.session_ids.back() != session->session_id()) res.session_ids.push_back(session->session_id());
        std::this_thread::sleep_for(std::chrono::milliseconds(60));
      }
      // Nothing acknowledged may be lost: the session still holds every acked token and its mask
      // over them is the reference's.
      res.held_tokens = session->tokens(0);
      res.reconnects = session->reconnects();
      auto mask = session->Mask(0);
      if (mask.ok()) {
        res.final_mask_ok = SameMask(mask->mask, Reference(*backend, Slice(q, 0, res.acked_tokens),
                                                           Slice(k, 0, res.acked_tokens)));
      } else {
        res.final_error = "final Mask: " + mask.status().ToString();
      }
      if (res.session_ids.back() != session->session_id()) res.session_ids.push_back(session->session_id());
      session->Close().IgnoreError();
    });
  }

  // Waits until the load made `unary` more successful calls and every session `steps` more steps.
  auto progress = [&](int ph, int unary, int steps, int seconds) {
    auto end = Clock::now() + std::chrono::seconds(seconds);
    while (Clock::now() < end) {
      {
        std::lock_guard<std::mutex> lock(seen.mu);
        if (seen.unary_ok[ph] >= unary && seen.session_steps[ph] >= steps * kSessions) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };

  // Phase 0: all three up.
  bool p0 = progress(0, 90, 4, 40);
  double before[3], sessions_at[3];
  for (int i = 0; i < 3; ++i) {
    before[i] = Requests(i, "Predict");
    sessions_at[i] = Gauge(i, "cab_active_sessions");
  }
  double total = before[0] + before[1] + before[2];
  std::printf("phase 0 (3 replicas): Predict per replica %.0f / %.0f / %.0f, open sessions %.0f / %.0f / %.0f\n",
              before[0], before[1], before[2], sessions_at[0], sessions_at[1], sessions_at[2]);
  EXPECT_TRUE(p0) << "the load did not make progress with all replicas up";
  for (int i = 0; i < 3; ++i) {
    EXPECT_GE(before[i], 0.15 * total) << "replica " << i << " got too little of the load (round_robin)";
  }

  // Phase 1: replica 0 drains (SIGTERM) under load.
  {
    std::lock_guard<std::mutex> lock(seen.mu);
    seen.phase_start[1] = Clock::now();
  }
  phase = 1;
  auto t_term = Clock::now();
  replicas_[0]->Signal(SIGTERM);
  int term_code = replicas_[0]->WaitExit(3 + 5);
  double term_s = std::chrono::duration<double>(Clock::now() - t_term).count();
  std::printf("phase 1: replica0 SIGTERM -> exit %d after %.1fs (drain grace 3s; -1: still running)\n", term_code,
              term_s);
  EXPECT_EQ(term_code, 0) << "the drained replica must exit 0 within its grace period; log:\n"
                          << replicas_[0]->LogTail(1500);
  if (term_code == -1) {  // keep the test bounded
    replicas_[0]->Signal(SIGKILL);
    replicas_[0]->WaitExit(10);
  }
  bool p1 = progress(1, 40, 3, 40);
  EXPECT_TRUE(p1) << "the load did not make progress after SIGTERM of replica0";

  // Phase 2: replica 1 crashes (SIGKILL) under load.
  {
    std::lock_guard<std::mutex> lock(seen.mu);
    seen.phase_start[2] = Clock::now();
  }
  phase = 2;
  double survivor_before = Requests(2, "Predict");
  replicas_[1]->Signal(SIGKILL);
  int kill_code = replicas_[1]->WaitExit(10);
  std::printf("phase 2: replica1 SIGKILL -> exit %d\n", kill_code);
  bool p2 = progress(2, 40, 3, 40);
  EXPECT_TRUE(p2) << "the load did not make progress after SIGKILL of replica1";

  stop = true;
  for (auto& t : threads) t.join();
  double survivor_after = Requests(2, "Predict");
  std::printf("survivor replica2: Predict %.0f -> %.0f during phase 2\n", survivor_before, survivor_after);
  EXPECT_GT(survivor_after, survivor_before);

  // What the client saw.
  for (int ph = 0; ph < 3; ++ph) {
    std::printf("phase %d: unary ok %d, failed %d, wrong mask %d, slowest %.0f ms; session steps ok %d, "
                "failed calls %d, wrong masks %d\n",
                ph, seen.unary_ok[ph], seen.unary_failed[ph], seen.unary_wrong[ph], seen.unary_max_ms[ph],
                seen.session_steps[ph], seen.session_failed[ph], seen.session_wrong[ph]);
  }
  for (const auto& [what, n] : seen.errors) std::printf("  client saw %dx %s\n", n, what.c_str());
  int reconnects = 0;
  for (int s = 0; s < kSessions; ++s) {
    const SessionResult& r = results[s];
    std::printf("session %d: acked %lld tokens, session holds %lld, reconnects %d, ids [%s], final mask %s %s\n", s,
                static_cast<long long>(r.acked_tokens), static_cast<long long>(r.held_tokens), r.reconnects,
                absl::StrJoin(r.session_ids, ", ").c_str(), r.final_mask_ok ? "matches" : "DIFFERS",
                r.final_error.c_str());
    reconnects += r.reconnects;
    EXPECT_EQ(r.held_tokens, r.acked_tokens) << "session " << s << " lost acknowledged chunks";
    EXPECT_TRUE(r.final_mask_ok) << "session " << s << ": " << r.final_error;
  }

  if (seen.unary_cancelled_in_drain > 0) {
    // The server's lame-duck period (UNAVAILABLE before Shutdown) and the client's health checking
    // exist so that no call races Shutdown; a CANCELLED here means one of them regressed.
    ADD_FAILURE() << seen.unary_cancelled_in_drain
                  << " unary call(s) ended CANCELLED while replica0 drained (a call raced the server's Shutdown)";
  }
  for (int ph = 0; ph < 3; ++ph) {
    EXPECT_EQ(seen.unary_failed[ph], 0) << "unary calls failed in phase " << ph << " (retries should hide it)";
    EXPECT_EQ(seen.unary_wrong[ph], 0) << "unary answers differ from the reference in phase " << ph;
    EXPECT_EQ(seen.session_wrong[ph], 0) << "session masks differ from the reference in phase " << ph;
    EXPECT_EQ(seen.session_failed[ph], 0) << "session calls failed in phase " << ph << " (reconnects should hide it)";
  }
  // Every session that lived on one of the two stopped replicas had to reopen its stream elsewhere.
  int on_stopped = static_cast<int>(sessions_at[0] + sessions_at[1]);
  std::printf("sessions on the stopped replicas: %d, reconnects in all: %d\n", on_stopped, reconnects);
  EXPECT_GE(reconnects, on_stopped) << "sessions on stopped replicas did not reopen their streams";
}

// Sessions send whole blocks (two per chunk).
TEST_F(ScaleOut, SpreadsLoadAndSurvivesSigtermThenSigkill) { Run(2 * kBlock); }

// Sessions send one and a half blocks per chunk: after a failover the client resynchronises
// (reopens the stream and replays the session) at every request, see cab/session.h.
TEST_F(ScaleOut, MidBlockChunksSurviveSigtermThenSigkill) { Run(kBlock + kBlock / 2); }

}  // namespace
