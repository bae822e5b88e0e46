// MaskPredictor.Stream: chunked prefill over several layers gives the masks one-shot Predict gives;
// representatives streamed equal full blocks; a cancelled stream frees its session (seen in metrics).
#include <random>

#include "gtest/gtest.h"
#include "mask_decode.h"
#include "problem.h"
#include "rpc_helpers.h"
#include "stream_helpers.h"

namespace cab_it {
namespace {

using StreamTest = ServerTest;

// The mask unary Predict answers for the first `tokens` tokens of `pb`.
DenseMask PredictPrefix(cab::v1::MaskPredictor::Stub& stub, const Problem& pb, int64_t tokens, const TestMaskParams& p,
                        cab::v1::MaskFormat format) {
  Problem prefix = pb;
  prefix.shape.tokens = tokens;
  prefix.q = SliceTokens(pb.q, 0, tokens);
  prefix.k = SliceTokens(pb.k, 0, tokens);
  cab::v1::PredictResponse resp;
  auto ctx = Context();
  const grpc::Status s = stub.Predict(ctx.get(), FullRequest(prefix, p, format), &resp);
  EXPECT_TRUE(s.ok()) << Describe(s);
  auto m = DecodeWireMask(resp.mask());
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : DenseMask{};
}

TEST_F(StreamTest, RandomChunksOverSeveralLayersEqualOneShotPredict) {
  const int layers = 3;
  ProblemShape shape;
  shape.dtype = cab::DType::kF16;
  std::vector<Problem> problems;
  for (int l = 0; l < layers; ++l) {
    shape.seed = 100 + l;
    problems.push_back(MakeProblem(shape));
  }
  for (cab::v1::MaskFormat format : AllMaskFormats()) {
    SCOPED_TRACE(cab::v1::MaskFormat_Name(format));
    TestMaskParams p;
    StreamClient stream(*stub_);
    cab::v1::SessionConfig config = ConfigFor(shape, layers, p, format);
    config.set_session_id("it-stream-" + cab::v1::MaskFormat_Name(format));
    auto ready = stream.Open(config);
    ASSERT_TRUE(ready.ok()) << ready.status();
    EXPECT_EQ(ready->session_id(), config.session_id());

    // Chunks of random sizes, layers interleaved in random order; a mid-prefill query on the way.
    std::mt19937 rng(42 + format);
    std::vector<int64_t> held(layers, 0);
    int64_t sent_bytes = 0, last_session_bytes = 0;
    bool queried_midway = false;
    uint64_t request_id = 1;
    while (true) {
      std::vector<int> open;
      for (int l = 0; l < layers; ++l)
        if (held[l] < shape.tokens) open.push_back(l);
      if (open.empty()) break;
      const int l = open[rng() % open.size()];
      const int64_t n = std::min<int64_t>(shape.tokens - held[l], 1 + rng() % 300);
      cab::v1::Chunk chunk = FullChunk(problems[l], l, held[l], n);
      sent_bytes += chunk.q().data().size() + chunk.k().data().size();
      auto ack = stream.SendChunk(chunk);
      ASSERT_TRUE(ack.ok()) << ack.status();
      held[l] += n;
      EXPECT_EQ(ack->layer(), l);
      EXPECT_EQ(ack->tokens(), held[l]);
      EXPECT_GT(ack->session_bytes(), 0);
      last_session_bytes = ack->session_bytes();
      if (!queried_midway && l == 1 && held[l] >= 400) {
        queried_midway = true;
        cab::v1::MaskQuery q;
        q.set_layer(1);
        q.set_request_id(request_id++);
        auto reply = stream.Query(q);
        ASSERT_TRUE(reply.ok()) << reply.status();
        auto got = DecodeWireMask(reply->mask());
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(MaskDiff(*got, PredictPrefix(*stub_, problems[1], held[1], p, format)), "")
            << "mid-prefill mask of layer 1 at " << held[1] << " tokens";
      }
    }
    // Only coarse state stays on the server: far less than the Q/K bytes sent.
    EXPECT_LT(last_session_bytes, sent_bytes / 2);

    for (int l = layers - 1; l >= 0; --l) {
      cab::v1::MaskQuery q;
      q.set_layer(l);
      q.set_request_id(request_id);
      q.set_diagnostics(true);
      auto reply = stream.Query(q);
      ASSERT_TRUE(reply.ok()) << reply.status();
      EXPECT_EQ(reply->request_id(), request_id);
      EXPECT_EQ(reply->layer(), l);
      EXPECT_EQ(reply->mask().format(), format);
      EXPECT_EQ(reply->diagnostics().heads_size(), shape.batch * shape.heads);
      ++request_id;
      auto got = DecodeWireMask(reply->mask());
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(MaskDiff(*got, PredictPrefix(*stub_, problems[l], shape.tokens, p, format)), "") << "layer " << l;
      auto want = ReferenceMask(problems[l], p);
      ASSERT_TRUE(want.ok()) << want.status();
      EXPECT_EQ(MaskDiff(*got, FromCab(want->mask)), "") << "layer " << l << " vs the in-process reference";
    }
    // A row range on the stream.
    cab::v1::MaskQuery q;
    q.set_layer(0);
    q.set_row_begin(5);
    q.set_row_end(9);
    auto reply = stream.Query(q);
    ASSERT_TRUE(reply.ok()) << reply.status();
    TestMaskParams rows = p;
    rows.row_begin = 5;
    rows.row_end = 9;
    auto want = ReferenceMask(problems[0], rows);
    ASSERT_TRUE(want.ok()) << want.status();
    auto got = DecodeWireMask(reply->mask());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(MaskDiff(*got, FromCab(want->mask)), "");

    const grpc::Status s = stream.Finish();
    EXPECT_TRUE(s.ok()) << Describe(s);
  }
}

TEST_F(StreamTest, StreamedRepresentativesEqualFullTensors) {
  ProblemShape shape;
  shape.seed = 7;
  const Problem pb = MakeProblem(shape);
  for (cab::MaskPolicy policy : {cab::MaskPolicy::kCab, cab::MaskPolicy::kQuest, cab::MaskPolicy::kMagnitude}) {
    SCOPED_TRACE(cab::Name(policy));
    TestMaskParams p;
    p.policy = policy;
    StreamClient stream(*stub_);
    auto ready = stream.Open(ConfigFor(shape, 1, p, cab::v1::MASK_FORMAT_BSR, /*representatives=*/true));
    ASSERT_TRUE(ready.ok()) << ready.status();
    EXPECT_FALSE(ready->session_id().empty()) << "the server makes a session id when the client sends none";
    const int M = shape.blocks();
    for (int b = 0; b < M;) {
      const int e = std::min(M, b + 1 + b % 5);  // whole blocks; the last one partial
      auto ack = stream.SendChunk(RepresentativesChunk(pb, 0, b, e));
      ASSERT_TRUE(ack.ok()) << ack.status();
      EXPECT_EQ(ack->tokens(), std::min<int64_t>(int64_t{e} * shape.block_size, shape.tokens));
      b = e;
    }
    auto reply = stream.Query(cab::v1::MaskQuery());
    ASSERT_TRUE(reply.ok()) << reply.status();
    auto got = DecodeWireMask(reply->mask());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(MaskDiff(*got, PredictPrefix(*stub_, pb, shape.tokens, p, cab::v1::MASK_FORMAT_BSR)), "");
    EXPECT_TRUE(stream.Finish().ok());
  }
}

TEST_F(StreamTest, CancelMidStreamFreesTheSession) {
  const int port = server_->metrics_port();
  ASSERT_GT(port, 0);
  const double cancelled_before =
      ReadMetric(port, "cab_sessions_closed_total", {{"reason", "cancelled"}}).value_or(0);
  ProblemShape shape;
  const Problem pb = MakeProblem(shape);
  {
    StreamClient stream(*stub_);
    ASSERT_TRUE(stream.Open(ConfigFor(shape, 2, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR)).ok());
    auto ack = stream.SendChunk(FullChunk(pb, 0, 0, 500));
    ASSERT_TRUE(ack.ok()) << ack.status();
    WaitForMetric(port, "cab_active_sessions", {}, [](double v) { return v == 1; });
    WaitForMetric(port, "cab_active_streams", {}, [](double v) { return v == 1; });
    EXPECT_GT(ReadMetric(port, "cab_session_memory_bytes").value_or(0), 0);
    stream.context().TryCancel();
  }
  WaitForMetric(port, "cab_active_sessions", {}, [](double v) { return v == 0; });
  WaitForMetric(port, "cab_active_streams", {}, [](double v) { return v == 0; });
  WaitForMetric(port, "cab_session_memory_bytes", {}, [](double v) { return v == 0; });
  WaitForMetric(port, "cab_sessions_closed_total", {{"reason", "cancelled"}},
                [&](double v) { return v == cancelled_before + 1; });
  ExpectServerHealthy();
}

TEST_F(StreamTest, CompletedStreamCountsAsCompleted) {
  const int port = server_->metrics_port();
  ProblemShape shape;
  const Problem pb = MakeProblem(shape);
  StreamClient stream(*stub_);
  ASSERT_TRUE(stream.Open(ConfigFor(shape, 1, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR)).ok());
  ASSERT_TRUE(stream.SendChunk(FullChunk(pb, 0, 0, shape.tokens)).ok());
  ASSERT_TRUE(stream.Query(cab::v1::MaskQuery()).ok());
  const grpc::Status s = stream.Finish();
  EXPECT_TRUE(s.ok()) << Describe(s);
  WaitForMetric(port, "cab_sessions_closed_total", {{"reason", "completed"}}, [](double v) { return v == 1; });
  WaitForMetric(port, "cab_active_sessions", {}, [](double v) { return v == 0; });
}

// Decode: after a prefill, single-token chunks (crossing block boundaries) with a query after each;
// every answer equals Predict on the same prefix. Batch 2 and a GQA group of 4.
TEST_F(StreamTest, SingleTokenDecodeStepsEqualPredictOnThePrefix) {
  ProblemShape shape;
  shape.batch = 2;
  shape.heads = 4;
  shape.kv_heads = 1;
  shape.tokens = 300;
  shape.block_size = 16;
  shape.seed = 77;
  const Problem pb = MakeProblem(shape);
  TestMaskParams p;
  StreamClient stream(*stub_);
  ASSERT_TRUE(stream.Open(ConfigFor(shape, 1, p, cab::v1::MASK_FORMAT_BITMAP)).ok());
  const int64_t prefill = 250;
  ASSERT_TRUE(stream.SendChunk(FullChunk(pb, 0, 0, prefill)).ok());
  for (int64_t t = prefill; t < shape.tokens; ++t) {
    auto ack = stream.SendChunk(FullChunk(pb, 0, t, 1));
    ASSERT_TRUE(ack.ok()) << ack.status();
    ASSERT_EQ(ack->tokens(), t + 1);
    if ((t + 1) % 7 != 0 && (t + 1) % 16 > 1) continue;  // query often, and on both sides of block edges
    auto reply = stream.Query(cab::v1::MaskQuery());
    ASSERT_TRUE(reply.ok()) << reply.status();
    auto got = DecodeWireMask(reply->mask());
    ASSERT_TRUE(got.ok()) << got.status();
    auto want = ReferenceMask(pb, p, t + 1);
    ASSERT_TRUE(want.ok()) << want.status();
    EXPECT_EQ(MaskDiff(*got, FromCab(want->mask)), "") << "after " << t + 1 << " tokens";
  }
  EXPECT_TRUE(stream.Finish().ok());
}

// A stream whose client deadline passes is ended by gRPC; the server must free its session.
TEST_F(StreamTest, ExpiredStreamDeadlineFreesTheSession) {
  const int port = server_->metrics_port();
  ProblemShape shape;
  const Problem pb = MakeProblem(shape);
  {
    StreamClient stream(*stub_, absl::Milliseconds(1500));
    ASSERT_TRUE(stream.Open(ConfigFor(shape, 1, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR)).ok());
    ASSERT_TRUE(stream.SendChunk(FullChunk(pb, 0, 0, 300)).ok());
    WaitForMetric(port, "cab_active_sessions", {}, [](double v) { return v == 1; });
    // Nothing more is sent; the deadline ends the stream.
    EXPECT_EQ(stream.FinishAfterError().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  WaitForMetric(port, "cab_active_sessions", {}, [](double v) { return v == 0; });
  WaitForMetric(port, "cab_session_memory_bytes", {}, [](double v) { return v == 0; });
  ExpectServerHealthy();
}

// A client that pipelines (writes every chunk and query before reading anything) gets the answers in
// request order, each query answered over the tokens sent before it.
TEST_F(StreamTest, PipelinedRequestsAreAnsweredInOrder) {
  ProblemShape shape;
  shape.seed = 91;
  const Problem pb = MakeProblem(shape);
  TestMaskParams p;
  StreamClient stream(*stub_);
  ASSERT_TRUE(stream.Open(ConfigFor(shape, 1, p, cab::v1::MASK_FORMAT_BSR)).ok());
  std::vector<int64_t> query_tokens;  // tokens held when each query was sent
  std::vector<char> kinds;            // 'a' ack, 'm' mask, in request order
  int64_t held = 0;
  uint64_t id = 1;
  while (held < shape.tokens) {
    const int64_t n = std::min<int64_t>(shape.tokens - held, 90);
    cab::v1::StreamRequest c;
    *c.mutable_chunk() = FullChunk(pb, 0, held, n);
    ASSERT_TRUE(stream.Write(c));
    held += n;
    kinds.push_back('a');
    cab::v1::StreamRequest q;
    q.mutable_query()->set_request_id(id++);
    ASSERT_TRUE(stream.Write(q));
    query_tokens.push_back(held);
    kinds.push_back('m');
  }
  size_t next_query = 0;
  int64_t acked = 0;
  for (size_t i = 0; i < kinds.size(); ++i) {
    auto r = stream.Read();
    ASSERT_TRUE(r.has_value()) << "stream ended early: " << Describe(stream.FinishAfterError());
    if (kinds[i] == 'a') {
      ASSERT_TRUE(r->has_ack()) << "response " << i << " is not the ack it should be";
      EXPECT_GT(r->ack().tokens(), acked);
      acked = r->ack().tokens();
      continue;
    }
    ASSERT_TRUE(r->has_mask()) << "response " << i << " is not the mask it should be";
    EXPECT_EQ(r->mask().request_id(), next_query + 1);
    auto got = DecodeWireMask(r->mask().mask());
    ASSERT_TRUE(got.ok()) << got.status();
    auto want = ReferenceMask(pb, p, query_tokens[next_query]);
    ASSERT_TRUE(want.ok()) << want.status();
    EXPECT_EQ(MaskDiff(*got, FromCab(want->mask)), "") << "query " << next_query + 1;
    ++next_query;
  }
  EXPECT_TRUE(stream.Finish().ok());
}

}  // namespace
}  // namespace cab_it
