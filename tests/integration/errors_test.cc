// Every bad input a caller can send gets its status code and a message naming the field, and the
// same server answers the next request correctly (the error hurt nobody else).
#include <functional>

#include "gtest/gtest.h"
#include "problem.h"
#include "rpc_helpers.h"
#include "stream_helpers.h"

namespace cab_it {
namespace {

using grpc::StatusCode;

struct PredictCase {
  const char* name;
  std::function<void(cab::v1::PredictRequest&)> mutate;
  std::vector<std::string> fields;  // the message must name one of these
};

std::vector<PredictCase> PredictCases() {
  return {
      {"q bytes shorter than its shape", [](auto& r) { r.mutable_q()->mutable_data()->resize(r.q().data().size() - 2); }, {"q"}},
      {"k bytes longer than its shape", [](auto& r) { r.mutable_k()->mutable_data()->append("xxxx"); }, {"k"}},
      {"q rank 3", [](auto& r) { r.mutable_q()->mutable_shape()->RemoveLast(); }, {"q"}},
      {"k dtype unspecified", [](auto& r) { r.mutable_k()->set_dtype(cab::v1::DTYPE_UNSPECIFIED); }, {"k"}},
      {"q dtype int32 (output only)", [](auto& r) { r.mutable_q()->set_dtype(cab::v1::DTYPE_INT32); }, {"q"}},
      {"k head_dim differs from q", [](auto& r) {
         r.mutable_k()->set_shape(3, 16);
         r.mutable_k()->mutable_data()->resize(r.k().data().size() / 2);
       }, {"k", "q", "head_dim"}},
      {"k tokens differ from q", [](auto& r) {
         r.mutable_k()->set_shape(2, 500);
         r.mutable_k()->mutable_data()->resize(r.k().data().size() / 2);
       }, {"k", "q", "tokens"}},
      {"heads not a multiple of kv heads", [](auto& r) {
         r.mutable_q()->set_shape(1, 3);
         r.mutable_q()->mutable_data()->resize(r.q().data().size() / 4 * 3);
       }, {"q", "k", "heads", "kv_heads"}},
      {"no q and no q_rep", [](auto& r) { r.clear_q(); }, {"q", "q_rep"}},
      {"negative dimension", [](auto& r) { r.mutable_q()->set_shape(2, -1000); }, {"q"}},
      {"zero dimension", [](auto& r) { r.mutable_k()->set_shape(1, 0); }, {"k"}},
      {"shape product overflows int64", [](auto& r) {
         for (int i = 0; i < 4; ++i) r.mutable_q()->set_shape(i, int64_t{1} << 40);
       }, {"q"}},
      {"shape product wraps to the right byte count", [](auto& r) {
         // 2^62 * 2^2 elements * 4 bytes wraps to 0 in 64-bit arithmetic; must not be accepted.
         r.mutable_q()->set_shape(0, int64_t{1} << 62);
         r.mutable_q()->set_shape(1, 4);
         r.mutable_q()->set_shape(2, 1);
         r.mutable_q()->set_shape(3, 1);
         r.mutable_q()->clear_data();
       }, {"q"}},
      {"block_size 0", [](auto& r) { r.set_block_size(0); }, {"block_size"}},
      {"block_size 8 (below 16)", [](auto& r) { r.set_block_size(8); }, {"block_size"}},
      {"block_size 4096 (above 1024)", [](auto& r) { r.set_block_size(4096); }, {"block_size"}},
      {"sparsity 1", [](auto& r) { r.mutable_params()->set_sparsity(1.f); }, {"sparsity", "params.sparsity"}},
      {"sparsity -0.1", [](auto& r) { r.mutable_params()->set_sparsity(-0.1f); }, {"sparsity", "params.sparsity"}},
      {"cab shares do not sum to 1", [](auto& r) {
         r.mutable_params()->set_local_ratio(0.5f);
         r.mutable_params()->set_bridge_ratio(0.5f);
         r.mutable_params()->set_importance_ratio(0.5f);
       }, {"local_ratio", "bridge_ratio", "importance_ratio"}},
      {"graph_degree 0", [](auto& r) { r.mutable_params()->set_graph_degree(0); }, {"graph_degree", "degree"}},
      {"negative blocks_per_row", [](auto& r) { r.mutable_params()->set_blocks_per_row(-2); }, {"blocks_per_row"}},
      {"negative min_keep", [](auto& r) { r.mutable_params()->set_min_keep(-1); }, {"min_keep"}},
      {"policy outside the enum", [](auto& r) { r.mutable_params()->set_policy(static_cast<cab::v1::MaskPolicy>(99)); }, {"policy"}},
      {"estimator outside the enum", [](auto& r) { r.mutable_params()->set_estimator(static_cast<cab::v1::Estimator>(42)); }, {"estimator"}},
      {"format outside the enum", [](auto& r) { r.set_format(static_cast<cab::v1::MaskFormat>(17)); }, {"format"}},
      {"row_begin past the last block", [](auto& r) { r.set_row_begin(40); }, {"row_begin"}},
      {"row_end before row_begin", [](auto& r) {
         r.set_row_begin(10);
         r.set_row_end(5);
       }, {"row_end", "row_begin"}},
      {"negative row_begin", [](auto& r) { r.set_row_begin(-1); }, {"row_begin"}},
  };
}

using ErrorsTest = ServerTest;

TEST_F(ErrorsTest, PredictBadInputIsInvalidArgumentNamingTheField) {
  const Problem pb = MakeProblem(ProblemShape{});
  for (const PredictCase& c : PredictCases()) {
    SCOPED_TRACE(c.name);
    cab::v1::PredictRequest req = FullRequest(pb, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR);
    c.mutate(req);
    cab::v1::PredictResponse resp;
    auto ctx = Context();
    const grpc::Status s = stub_->Predict(ctx.get(), req, &resp);
    EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(s);
    bool named = false;
    for (const auto& f : c.fields) named = named || NamesField(s.error_message(), f);
    EXPECT_TRUE(named) << "message does not name the field: " << s.error_message();
    ExpectServerHealthy();
  }
}

TEST_F(ErrorsTest, RepresentativesBadInput) {
  const Problem pb = MakeProblem(ProblemShape{});
  struct Case {
    const char* name;
    std::function<void(cab::v1::PredictRequest&)> mutate;
    std::vector<std::string> fields;
  };
  const std::vector<Case> cases = {
      {"tokens 0", [](auto& r) { r.set_tokens(0); }, {"tokens"}},
      {"tokens imply more blocks than sent", [](auto& r) { r.set_tokens(r.tokens() + 64); }, {"tokens", "q_rep", "k_rep"}},
      {"k_rep bytes short", [](auto& r) { r.mutable_k_rep()->mutable_data()->resize(10); }, {"k_rep"}},
      {"k_min shape differs from k_rep", [](auto& r) {
         r.mutable_k_min()->set_shape(2, 3);
         r.mutable_k_min()->mutable_data()->resize(r.k_min().data().size() / 32 * 3);
       }, {"k_min"}},
      {"quest estimator with k_min but no k_max", [](auto& r) { r.clear_k_max(); }, {"k_max", "k_min"}},
      {"q and q_rep both sent", [&](auto& r) { *r.mutable_q() = ToWire(pb.q, cab::DType::kF32); }, {"q", "q_rep"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    cab::v1::PredictRequest req = RepresentativesRequest(pb, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR);
    c.mutate(req);
    cab::v1::PredictResponse resp;
    auto ctx = Context();
    const grpc::Status s = stub_->Predict(ctx.get(), req, &resp);
    EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(s);
    bool named = false;
    for (const auto& f : c.fields) named = named || NamesField(s.error_message(), f);
    EXPECT_TRUE(named) << "message does not name the field: " << s.error_message();
    ExpectServerHealthy();
  }
}

TEST_F(ErrorsTest, EvictBadInput) {
  const HostTensor scores = RandomTokens({1, 2, 100}, 1);
  const HostTensor keys = RandomTokens({1, 2, 100, 16}, 2);
  struct Case {
    const char* name;
    std::function<void(cab::v1::EvictRequest&)> mutate;
    std::vector<std::string> fields;
  };
  const std::vector<Case> cases = {
      {"negative keep", [](auto& r) { r.set_keep(-1); }, {"keep"}},
      {"scores bytes short", [](auto& r) { r.mutable_scores()->mutable_data()->resize(12); }, {"scores"}},
      {"h2o without scores", [](auto& r) {
         r.set_policy(cab::v1::EVICT_POLICY_H2O);
         r.clear_scores();
       }, {"scores"}},
      {"snapkv without window", [](auto& r) { r.set_policy(cab::v1::EVICT_POLICY_SNAPKV); }, {"window"}},
      {"keys tokens differ from scores", [](auto& r) {
         r.mutable_keys()->set_shape(2, 50);
         r.mutable_keys()->mutable_data()->resize(r.keys().data().size() / 2);
       }, {"keys", "scores", "tokens"}},
      {"policy outside the enum", [](auto& r) { r.set_policy(static_cast<cab::v1::EvictPolicy>(77)); }, {"policy"}},
      {"block_size 0", [](auto& r) { r.set_block_size(0); }, {"block_size"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    cab::v1::EvictRequest req;
    req.set_policy(cab::v1::EVICT_POLICY_CAB);
    req.set_keep(20);
    *req.mutable_scores() = ToWire(scores, cab::DType::kF32);
    *req.mutable_keys() = ToWire(keys, cab::DType::kF32);
    c.mutate(req);
    cab::v1::EvictResponse resp;
    auto ctx = Context();
    const grpc::Status s = stub_->Evict(ctx.get(), req, &resp);
    EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(s);
    bool named = false;
    for (const auto& f : c.fields) named = named || NamesField(s.error_message(), f);
    EXPECT_TRUE(named) << "message does not name the field: " << s.error_message();
    ExpectServerHealthy();
  }
}

// Stream errors: the stream ends with the code, the message names the field, the session is closed
// (reason "error") and the server keeps serving.
struct StreamCase {
  const char* name;
  // Drives one stream into the error; returns the final status.
  std::function<grpc::Status(StreamClient&, const Problem&)> run;
  std::vector<std::string> fields;
  bool opened;  // the session existed before the error (so it must be closed with reason "error")
};

cab::v1::SessionConfig GoodConfig(const Problem& pb) {
  return ConfigFor(pb.shape, 2, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR);
}

grpc::Status OpenThen(StreamClient& s, const Problem& pb, const std::function<void(StreamClient&)>& after) {
  auto ready = s.Open(GoodConfig(pb));
  if (!ready.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "open failed: " + ready.status().ToString());
  after(s);
  return s.FinishAfterError();
}

grpc::Status BadConfig(StreamClient& s, const Problem& pb, const std::function<void(cab::v1::SessionConfig&)>& f) {
  cab::v1::SessionConfig c = GoodConfig(pb);
  f(c);
  auto ready = s.Open(c);
  if (ready.ok()) return grpc::Status::OK;
  return s.FinishAfterError();
}

void WriteChunk(StreamClient& s, const cab::v1::Chunk& c) {
  cab::v1::StreamRequest r;
  *r.mutable_chunk() = c;
  s.Write(r);
}

std::vector<StreamCase> StreamCases() {
  return {
      {"chunk before config", [](StreamClient& s, const Problem& pb) {
         WriteChunk(s, FullChunk(pb, 0, 0, 64));
         return s.FinishAfterError();
       }, {"config"}, false},
      {"query before config", [](StreamClient& s, const Problem&) {
         cab::v1::StreamRequest r;
         r.mutable_query()->set_layer(0);
         s.Write(r);
         return s.FinishAfterError();
       }, {"config"}, false},
      {"config layers 0", [](StreamClient& s, const Problem& pb) {
         return BadConfig(s, pb, [](auto& c) { c.set_layers(0); });
       }, {"layers"}, false},
      {"config kv_heads does not divide heads", [](StreamClient& s, const Problem& pb) {
         return BadConfig(s, pb, [](auto& c) { c.set_kv_heads(3); });
       }, {"kv_heads", "heads"}, false},
      {"config block_size 8", [](StreamClient& s, const Problem& pb) {
         return BadConfig(s, pb, [](auto& c) { c.set_block_size(8); });
       }, {"block_size"}, false},
      {"config dtype int64", [](StreamClient& s, const Problem& pb) {
         return BadConfig(s, pb, [](auto& c) { c.set_dtype(cab::v1::DTYPE_INT64); });
       }, {"dtype"}, false},
      {"config sparsity 2", [](StreamClient& s, const Problem& pb) {
         return BadConfig(s, pb, [](auto& c) { c.mutable_params()->set_sparsity(2.f); });
       }, {"sparsity"}, false},
      {"second config", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient& st) {
           cab::v1::StreamRequest r;
           *r.mutable_config() = GoodConfig(pb);
           st.Write(r);
         });
       }, {"config"}, true},
      {"chunk start skips tokens", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient& st) {
           ASSERT_TRUE(st.SendChunk(FullChunk(pb, 0, 0, 100)).ok());
           WriteChunk(st, FullChunk(pb, 0, 150, 50));
         });
       }, {"start"}, true},
      {"chunk start repeats tokens", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient& st) {
           ASSERT_TRUE(st.SendChunk(FullChunk(pb, 0, 0, 100)).ok());
           WriteChunk(st, FullChunk(pb, 0, 0, 100));
         });
       }, {"start"}, true},
      {"chunk layer out of range", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient&) { WriteChunk(s, FullChunk(pb, 2, 0, 64)); });
       }, {"layer"}, true},
      {"chunk negative layer", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient&) { WriteChunk(s, FullChunk(pb, -1, 0, 64)); });
       }, {"layer"}, true},
      {"chunk q bytes short", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient&) {
           cab::v1::Chunk c = FullChunk(pb, 0, 0, 64);
           c.mutable_q()->mutable_data()->resize(100);
           WriteChunk(s, c);
         });
       }, {"q"}, true},
      {"chunk tokens differ from the tensors", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient&) {
           cab::v1::Chunk c = FullChunk(pb, 0, 0, 64);
           c.set_tokens(65);
           WriteChunk(s, c);
         });
       }, {"tokens", "q"}, true},
      {"chunk dtype differs from config", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient&) {
           cab::v1::Chunk c = FullChunk(pb, 0, 0, 64);
           *c.mutable_q() = ToWire(SliceTokens(pb.q, 0, 64), cab::DType::kF16);
           *c.mutable_k() = ToWire(SliceTokens(pb.k, 0, 64), cab::DType::kF16);
           WriteChunk(s, c);
         });
       }, {"dtype", "q"}, true},
      {"chunk head_dim differs from config", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient&) {
           cab::v1::Chunk c = FullChunk(pb, 0, 0, 64);
           c.mutable_k()->set_shape(3, 16);
           c.mutable_k()->mutable_data()->resize(c.k().data().size() / 2);
           WriteChunk(s, c);
         });
       }, {"k", "head_dim"}, true},
      {"query layer out of range", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient& st) {
           ASSERT_TRUE(st.SendChunk(FullChunk(pb, 0, 0, 100)).ok());
           cab::v1::StreamRequest r;
           r.mutable_query()->set_layer(5);
           st.Write(r);
         });
       }, {"layer"}, true},
      {"query of a layer with no tokens", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient& st) {
           ASSERT_TRUE(st.SendChunk(FullChunk(pb, 0, 0, 100)).ok());
           cab::v1::StreamRequest r;
           r.mutable_query()->set_layer(1);
           st.Write(r);
         });
       }, {"layer"}, true},
      {"query row_begin past the blocks held", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient& st) {
           ASSERT_TRUE(st.SendChunk(FullChunk(pb, 0, 0, 100)).ok());
           cab::v1::StreamRequest r;
           r.mutable_query()->set_layer(0);
           r.mutable_query()->set_row_begin(10);
           st.Write(r);
         });
       }, {"row_begin"}, true},
      {"representatives after a partial block", [](StreamClient& s, const Problem& pb) {
         cab::v1::SessionConfig c = ConfigFor(pb.shape, 1, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR, true);
         if (!s.Open(c).ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "open failed");
         // Blocks 0..1 cover 64 tokens; claim only 40 of them, then append block 2.
         cab::v1::Chunk first = RepresentativesChunk(pb, 0, 0, 2);
         first.set_tokens(40);
         if (!s.SendChunk(first).ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "partial chunk refused");
         cab::v1::Chunk next = RepresentativesChunk(pb, 0, 2, 3);
         next.set_start(40);
         WriteChunk(s, next);
         return s.FinishAfterError();
       }, {"start", "tokens", "chunk"}, true},
      {"empty message", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient& st) { st.Write(cab::v1::StreamRequest()); });
       }, {"kind", "chunk", "query", "config", "request"}, true},
  };
}

TEST_F(ErrorsTest, StreamBadInputEndsTheStreamNamingTheField) {
  const Problem pb = MakeProblem(ProblemShape{});
  const int port = server_->metrics_port();
  double errors = 0;
  for (const StreamCase& c : StreamCases()) {
    SCOPED_TRACE(c.name);
    grpc::Status s;
    {
      StreamClient stream(*stub_, absl::Seconds(20));
      s = c.run(stream, pb);
    }
    EXPECT_TRUE(s.error_code() == StatusCode::INVALID_ARGUMENT || s.error_code() == StatusCode::FAILED_PRECONDITION)
        << Describe(s);
    bool named = false;
    for (const auto& f : c.fields) named = named || NamesField(s.error_message(), f);
    EXPECT_TRUE(named) << "message does not name the field: " << s.error_message();
    if (c.opened) {
      ++errors;
      WaitForMetric(port, "cab_sessions_closed_total", {{"reason", "error"}}, [&](double v) { return v == errors; });
    }
    WaitForMetric(port, "cab_active_sessions", {}, [](double v) { return v == 0; });
    ExpectServerHealthy();
  }
}

// Limits: RESOURCE_EXHAUSTED, and the server keeps serving requests within them.
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

}  // namespace
}  // namespace cab_it

namespace cab_it {
namespace {

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
