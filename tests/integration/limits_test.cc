// Limits: over --max_tokens, --max_heads, --max_head_dim, --max_message_bytes, --max_sessions,
// --max_session_bytes, --max_total_bytes the answer is RESOURCE_EXHAUSTED, the server keeps serving
// within them, and --session_idle_timeout_s closes idle sessions.
#include <functional>

#include "gtest/gtest.h"
#include "problem.h"
#include "rpc_helpers.h"
#include "stream_helpers.h"

namespace cab_it {
namespace {

using grpc::StatusCode;

class LimitsTest : public ServerTest {
 protected:
  ServerOptions Options() override {
    ServerOptions o;
    o.flags = {"--max_tokens=2048", "--max_heads=8",        "--max_head_dim=64",
               "--max_sessions=2",  "--max_message_bytes=1500000"};
    return o;
  }
};

void ExpectExhausted(const grpc::Status& s, const std::vector<std::string>& words) {
  EXPECT_EQ(s.error_code(), StatusCode::RESOURCE_EXHAUSTED) << Describe(s);
  bool named = false;
  for (const auto& w : words) named = named || s.error_message().find(w) != std::string::npos;
  EXPECT_TRUE(named) << "message names none of the expected words: " << s.error_message();
}

TEST_F(LimitsTest, InfoReportsTheConfiguredLimits) {
  cab::v1::InfoResponse info;
  auto ctx = Context();
  ASSERT_TRUE(stub_->Info(ctx.get(), cab::v1::InfoRequest(), &info).ok());
  EXPECT_EQ(info.limits().max_tokens(), 2048);
  EXPECT_EQ(info.limits().max_heads(), 8);
  EXPECT_EQ(info.limits().max_head_dim(), 64);
  EXPECT_EQ(info.limits().max_sessions(), 2);
  EXPECT_EQ(info.limits().max_message_bytes(), 1500000);
  EXPECT_EQ(info.limits().min_block_size(), 16);
  EXPECT_EQ(info.limits().max_block_size(), 1024);
}

TEST_F(LimitsTest, PredictOverTheLimitsIsResourceExhausted) {
  struct Case {
    const char* name;
    ProblemShape shape;
    std::vector<std::string> words;
  };
  ProblemShape tokens, heads, dim;
  tokens.tokens = 3000;
  tokens.head_dim = 8;
  heads.heads = 16;
  heads.kv_heads = 16;
  heads.tokens = 64;
  dim.head_dim = 128;
  dim.tokens = 128;
  const std::vector<Case> cases = {{"tokens over max_tokens", tokens, {"max_tokens", "tokens"}},
                                   {"heads over max_heads", heads, {"max_heads", "heads"}},
                                   {"head_dim over max_head_dim", dim, {"max_head_dim", "head_dim"}}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const Problem pb = MakeProblem(c.shape);
    cab::v1::PredictResponse resp;
    auto ctx = Context();
    ExpectExhausted(stub_->Predict(ctx.get(), FullRequest(pb, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR), &resp),
                    c.words);
    ExpectServerHealthy();
  }
  // A message over --max_message_bytes (2 x 1000 x 4 x 128 x 4 bytes = 4 MB).
  ProblemShape big;
  big.heads = big.kv_heads = 4;
  big.head_dim = 64;
  big.tokens = 2000;
  const Problem pb = MakeProblem(big);
  cab::v1::PredictResponse resp;
  auto ctx = Context();
  const grpc::Status s = stub_->Predict(ctx.get(), FullRequest(pb, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR), &resp);
  EXPECT_EQ(s.error_code(), StatusCode::RESOURCE_EXHAUSTED) << Describe(s);
  ExpectServerHealthy();
}

TEST_F(LimitsTest, StreamsOverMaxSessionsAndTokensAreResourceExhausted) {
  ProblemShape shape;
  auto config = ConfigFor(shape, 1, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR);
  StreamClient a(*stub_), b(*stub_);
  ASSERT_TRUE(a.Open(config).ok());
  ASSERT_TRUE(b.Open(config).ok());
  {
    StreamClient c(*stub_);
    auto ready = c.Open(config);
    ASSERT_FALSE(ready.ok());
    EXPECT_EQ(ready.status().code(), absl::StatusCode::kResourceExhausted) << ready.status();
    EXPECT_NE(ready.status().message().find("session"), std::string::npos) << ready.status();
  }
  // Tokens beyond --max_tokens (2048) on a stream: 2100 tokens sent in three chunks.
  ProblemShape longer = shape;
  longer.tokens = 2100;
  const Problem more = MakeProblem(longer);
  ASSERT_TRUE(a.SendChunk(FullChunk(more, 0, 0, 1000)).ok());
  ASSERT_TRUE(a.SendChunk(FullChunk(more, 0, 1000, 1000)).ok());
  cab::v1::StreamRequest r;
  *r.mutable_chunk() = FullChunk(more, 0, 2000, 100);
  a.Write(r);
  ExpectExhausted(a.FinishAfterError(), {"max_tokens", "tokens"});
  // The slot a freed is usable again.
  EXPECT_TRUE(b.Finish().ok());
  StreamClient d(*stub_);
  EXPECT_TRUE(d.Open(config).ok());
  EXPECT_TRUE(d.Finish().ok());
  ExpectServerHealthy();
}

class SessionMemoryTest : public ServerTest {
 protected:
  ServerOptions Options() override {
    ServerOptions o;
    o.flags = {"--max_session_bytes=40000"};
    return o;
  }
};

TEST_F(SessionMemoryTest, SessionOverItsMemoryLimitIsResourceExhausted) {
  ProblemShape shape;
  const Problem pb = MakeProblem(shape);
  StreamClient s(*stub_);
  auto ready = s.Open(ConfigFor(shape, 1, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR));
  grpc::Status final;
  if (!ready.ok()) {
    // A server may refuse up front when the configuration cannot fit; the code is the same.
    final = grpc::Status(static_cast<grpc::StatusCode>(ready.status().code()), std::string(ready.status().message()));
  } else {
    EXPECT_LE(ready->memory_limit_bytes(), 40000);
    int64_t held = 0;
    while (held < shape.tokens) {
      auto ack = s.SendChunk(FullChunk(pb, 0, held, 100));
      if (!ack.ok()) {
        final = grpc::Status(static_cast<grpc::StatusCode>(ack.status().code()), std::string(ack.status().message()));
        break;
      }
      EXPECT_LE(ack->session_bytes(), 40000) << "the server held more than --max_session_bytes";
      held += 100;
    }
    ASSERT_LT(held, shape.tokens) << "1000 tokens of 6 heads x 32 dims never exceeded 40000 bytes of coarse state";
  }
  ExpectExhausted(final, {"max_session_bytes", "memory", "bytes"});
  ExpectServerHealthy();
}

class TotalMemoryTest : public ServerTest {
 protected:
  ServerOptions Options() override {
    ServerOptions o;
    o.flags = {"--max_total_bytes=150000"};
    return o;
  }
};

// Two sessions of about 100 kB of coarse state each do not fit in 150 kB together.
TEST_F(TotalMemoryTest, SessionsOverTheTotalMemoryLimitAreResourceExhausted) {
  ProblemShape shape;
  const Problem pb = MakeProblem(shape);
  const auto config = ConfigFor(shape, 1, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR);
  StreamClient a(*stub_);
  ASSERT_TRUE(a.Open(config).ok());
  auto ack = a.SendChunk(FullChunk(pb, 0, 0, shape.tokens));
  ASSERT_TRUE(ack.ok()) << ack.status();
  ASSERT_GT(ack->session_bytes(), 75000) << "the test assumes about 100 kB per session";
  StreamClient b(*stub_);
  absl::Status st = b.Open(config).status();
  for (int64_t at = 0; st.ok() && at < shape.tokens; at += 100) st = b.SendChunk(FullChunk(pb, 0, at, 100)).status();
  ASSERT_FALSE(st.ok()) << "two sessions held more than --max_total_bytes";
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  // The first session is unharmed, and its memory is returned when it ends.
  auto reply = a.Query(cab::v1::MaskQuery());
  EXPECT_TRUE(reply.ok()) << reply.status();
  EXPECT_TRUE(a.Finish().ok());
  WaitForMetric(server_->metrics_port(), "cab_session_memory_bytes", {}, [](double v) { return v == 0; });
  StreamClient c(*stub_);
  ASSERT_TRUE(c.Open(config).ok());
  EXPECT_TRUE(c.SendChunk(FullChunk(pb, 0, 0, shape.tokens)).ok()) << "memory of finished sessions was not returned";
  EXPECT_TRUE(c.Finish().ok());
}

class IdleTimeoutTest : public ServerTest {
 protected:
  ServerOptions Options() override {
    ServerOptions o;
    o.flags = {"--session_idle_timeout_s=1"};
    return o;
  }
};

TEST_F(IdleTimeoutTest, IdleSessionIsClosedAndCounted) {
  ProblemShape shape;
  const Problem pb = MakeProblem(shape);
  StreamClient s(*stub_);
  ASSERT_TRUE(s.Open(ConfigFor(shape, 1, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR)).ok());
  ASSERT_TRUE(s.SendChunk(FullChunk(pb, 0, 0, 200)).ok());
  const int port = server_->metrics_port();
  WaitForMetric(port, "cab_sessions_closed_total", {{"reason", "idle_timeout"}}, [](double v) { return v == 1; },
                absl::Seconds(20));
  WaitForMetric(port, "cab_active_sessions", {}, [](double v) { return v == 0; });
  const grpc::Status final = s.FinishAfterError();
  EXPECT_FALSE(final.ok()) << "the idle stream was not ended";
  ExpectServerHealthy();
}
}  // namespace
}  // namespace cab_it
