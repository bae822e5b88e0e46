// Concurrent clients: 8 threads, each on its own channel, mixing unary Predict (different policies,
// formats, seeds) and streams; every answer must equal the in-process reference.
#include <atomic>
#include <thread>

#include "gtest/gtest.h"
#include "mask_decode.h"
#include "problem.h"
#include "rpc_helpers.h"
#include "stream_helpers.h"

namespace cab_it {
namespace {

using ConcurrencyTest = ServerTest;

TEST_F(ConcurrencyTest, EightClientsAllGetCorrectAnswers) {
  const int kThreads = 8, kRounds = 4;
  const auto policies = AllMaskPolicies();
  const auto formats = AllMaskFormats();

  // Inputs and reference answers first (the reference backend is not what is under test here).
  struct Job {
    Problem pb;
    TestMaskParams p;
    cab::v1::MaskFormat format;
    bool stream;
    DenseMask want;
  };
  std::vector<std::vector<Job>> jobs(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    for (int r = 0; r < kRounds; ++r) {
      ProblemShape shape;
      shape.seed = 1000 + t * kRounds + r;
      shape.tokens = 300 + 97 * ((t + r) % 7);
      Job j{MakeProblem(shape), {}, formats[(t + r) % formats.size()], (t + r) % 2 == 1, {}};
      j.p.policy = policies[(t * kRounds + r) % policies.size()];
      auto want = ReferenceMask(j.pb, j.p);
      ASSERT_TRUE(want.ok()) << want.status();
      j.want = FromCab(want->mask);
      jobs[t].push_back(std::move(j));
    }
  }

  std::atomic<int> failures{0};
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // One channel per thread: separate connections, as separate clients would have.
      grpc::ChannelArguments args;
      args.SetInt("grpc.use_local_subchannel_pool", 1);
      auto stub = cab::v1::MaskPredictor::NewStub(
          grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args));
      for (const Job& j : jobs[t]) {
        DenseMask got;
        if (!j.stream) {
          cab::v1::PredictResponse resp;
          auto ctx = Context(absl::Seconds(60));
          const grpc::Status s = stub->Predict(ctx.get(), FullRequest(j.pb, j.p, j.format), &resp);
          if (!s.ok()) {
            errors[t] += "Predict: " + Describe(s) + "\n";
            ++failures;
            continue;
          }
          auto m = DecodeWireMask(resp.mask());
          if (!m.ok()) {
            errors[t] += "decode: " + m.status().ToString() + "\n";
            ++failures;
            continue;
          }
          got = *m;
        } else {
          StreamClient stream(*stub);
          auto ready = stream.Open(ConfigFor(j.pb.shape, 1, j.p, j.format));
          absl::Status st = ready.status();
          for (int64_t at = 0; st.ok() && at < j.pb.shape.tokens; at += 128) {
            st = stream.SendChunk(FullChunk(j.pb, 0, at, std::min<int64_t>(128, j.pb.shape.tokens - at))).status();
          }
          absl::StatusOr<cab::v1::MaskReply> reply = st.ok() ? stream.Query(cab::v1::MaskQuery()) : st;
          if (!reply.ok()) {
            errors[t] += "stream: " + reply.status().ToString() + "\n";
            ++failures;
            continue;
          }
          auto m = DecodeWireMask(reply->mask());
          if (!m.ok()) {
            errors[t] += "decode: " + m.status().ToString() + "\n";
            ++failures;
            continue;
          }
          got = *m;
          const grpc::Status fin = stream.Finish();
          if (!fin.ok()) errors[t] += "stream finish: " + Describe(fin) + "\n";
        }
        const std::string diff = MaskDiff(got, j.want);
        if (!diff.empty()) {
          errors[t] += cab::Name(j.p.policy) + (j.stream ? " (stream): " : ": ") + diff + "\n";
          ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
  EXPECT_EQ(failures.load(), 0);
  WaitForMetric(server_->metrics_port(), "cab_active_sessions", {}, [](double v) { return v == 0; });
  WaitForMetric(server_->metrics_port(), "cab_inflight_requests", {}, [](double v) { return v == 0; });
}

// Clients that cancel at every point of a stream's life (after the config, after a chunk, right after
// writing a query that is being computed) and unary calls cancelled in flight, from 8 threads at
// once: the server survives, frees every session and ends with nothing in flight.
TEST_F(ConcurrencyTest, CancellationsAtEveryPointLeaveNothingBehind) {
  const int kThreads = 8, kRounds = 6;
  ProblemShape shape;
  shape.tokens = 2048;
  shape.block_size = 16;
  const Problem pb = MakeProblem(shape);
  const cab::v1::SessionConfig config = ConfigFor(shape, 1, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR);
  const cab::v1::Chunk chunk = FullChunk(pb, 0, 0, shape.tokens);
  const cab::v1::PredictRequest predict = FullRequest(pb, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto stub = cab::v1::MaskPredictor::NewStub(InsecureChannel(server_->address()));
      for (int r = 0; r < kRounds; ++r) {
        const int point = (t + r) % 4;
        if (point == 3) {
          cab::v1::PredictResponse resp;
          grpc::ClientContext ctx;
          std::thread canceller([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(2 + t));
            ctx.TryCancel();
          });
          stub->Predict(&ctx, predict, &resp);
          canceller.join();
          continue;
        }
        StreamClient stream(*stub, absl::Seconds(30));
        if (!stream.Open(config).ok()) continue;
        if (point >= 1) {
          cab::v1::StreamRequest c;
          *c.mutable_chunk() = chunk;
          stream.Write(c);
        }
        if (point >= 2) {
          cab::v1::StreamRequest q;
          q.mutable_query()->set_request_id(1);
          stream.Write(q);
        }
        stream.context().TryCancel();
      }
    });
  }
  for (auto& th : threads) th.join();
  const int port = server_->metrics_port();
  WaitForMetric(port, "cab_active_sessions", {}, [](double v) { return v == 0; }, absl::Seconds(30));
  WaitForMetric(port, "cab_active_streams", {}, [](double v) { return v == 0; }, absl::Seconds(30));
  WaitForMetric(port, "cab_session_memory_bytes", {}, [](double v) { return v == 0; }, absl::Seconds(30));
  WaitForMetric(port, "cab_inflight_requests", {}, [](double v) { return v == 0; }, absl::Seconds(30));
  EXPECT_TRUE(server_->Running()) << "cab-server died:\n" << server_->Log();
  ExpectServerHealthy();
}

}  // namespace
}  // namespace cab_it
