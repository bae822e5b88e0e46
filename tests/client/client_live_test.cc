// cab::Client against real cab-server processes on loopback: every RPC, every policy and format,
// masks equal to the in-process CPU backend, sessions equal to one-shot Predict, token and TLS
// plumbing, round-robin over a replica list, and a session surviving the death of its replica.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cab/backend.h"
#include "cab/client.h"
#include "cab/tensor_file.h"
#include "gtest/gtest.h"
#include "server_launcher.h"
#include "synthetic.h"

namespace cab {
namespace {

using cab_client_test::ScrapeMetric;
using cab_client_test::ServerLauncher;

constexpr int kBlock = 64;

struct Problem {
  OwnedTensor q, k;
};

// B=1, Hq=4, Hkv=2 (GQA), N=1000 (a partial last block), D=32.
Problem MakeProblem(uint64_t seed, int64_t n = 1000) {
  return {cli::RandomTensor({1, 4, n, 32}, DType::kF32, seed), cli::RandomTensor({1, 2, n, 32}, DType::kF32, seed + 100)};
}

OwnedTensor Tokens(const OwnedTensor& t, int64_t start, int64_t len) {
  OwnedTensor s{t.dtype, {t.shape[0], t.shape[1], len, t.shape[3]}, ""};
  const size_t row = t.shape[3] * DTypeSize(t.dtype);
  for (int64_t bh = 0; bh < t.shape[0] * t.shape[1]; ++bh)
    s.bytes.append(t.bytes.data() + (bh * t.shape[2] + start) * row, len * row);
  return s;
}

BlockMask Expected(const Problem& p, const MaskParams& params) {
  auto backend = MakeCpuBackend();
  auto qc = backend->Coarsen(p.q.view(), kBlock);
  auto kc = backend->Coarsen(p.k.view(), kBlock);
  EXPECT_TRUE(qc.ok() && kc.ok());
  MaskParams rows = params;
  if (rows.row_end == 0) rows.row_end = -1;
  auto r = backend->PredictMask(*qc, *kc, rows, false);
  EXPECT_TRUE(r.ok()) << r.status();
  return r->mask;
}

void ExpectSameMask(const BlockMask& got, const BlockMask& want, const std::string& what) {
  EXPECT_EQ(got.batch, want.batch) << what;
  EXPECT_EQ(got.heads, want.heads) << what;
  EXPECT_EQ(got.row_begin, want.row_begin) << what;
  EXPECT_EQ(got.rows, want.rows) << what;
  EXPECT_EQ(got.cols, want.cols) << what;
  EXPECT_EQ(got.row_offsets, want.row_offsets) << what;
  EXPECT_EQ(got.col_indices, want.col_indices) << what;
}

std::unique_ptr<Client> Connect(const std::string& target, ClientOptions o = {}) {
  o.target = target;
  auto c = Client::Create(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(*c);
}

class LiveServer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto s = ServerLauncher::Start();
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = s->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static ServerLauncher* server_;
};
ServerLauncher* LiveServer::server_ = nullptr;

TEST_F(LiveServer, InfoDescribesTheCpuBackend) {
  auto client = Connect(server_->address());
  auto info = client->Info();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->backend(), "cpu");
  EXPECT_FALSE(info->version().empty());
  EXPECT_EQ(info->mask_policies_size(), 7);
  EXPECT_GT(info->limits().max_tokens(), 0);
}

TEST_F(LiveServer, ChannelOptionsArePlumbed) {
  ClientOptions o;
  o.load_balancing_policy = "pick_first";
  o.keepalive_time_ms = 60000;
  o.max_attempts = 1;
  o.int_args = {{"grpc.max_reconnect_backoff_ms", 1000}};
  o.string_args = {{"grpc.primary_user_agent", "cab-client-test"}};
  auto info = Connect(server_->address(), o)->Info();
  EXPECT_TRUE(info.ok()) << info.status();
  ClientOptions bad;
  bad.target = server_->address();
  bad.load_balancing_policy = "grpclb";
  EXPECT_EQ(Client::Create(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LiveServer, PredictEveryPolicyAndFormatMatchesTheInProcessBackend) {
  auto client = Connect(server_->address());
  const Problem p = MakeProblem(11);
  for (auto policy : {MaskPolicy::kCab, MaskPolicy::kMagnitude, MaskPolicy::kRandom, MaskPolicy::kStreaming,
                      MaskPolicy::kQuest, MaskPolicy::kDense, MaskPolicy::kAdaptive}) {
    MaskParams params;
    params.policy = policy;
    params.sparsity = 0.7f;
    params.graph.degree = 4;
    params.seed = 3;
    const BlockMask want = Expected(p, params);
    for (auto format : {MaskFormat::kBsr, MaskFormat::kBitmap, MaskFormat::kFlex}) {
      for (bool reps : {false, true}) {
        PredictInput in;
        in.block_size = kBlock;
        in.params = params;
        in.format = format;
        in.q = p.q.view();
        in.k = p.k.view();
        in.representatives = reps;
        auto r = client->Predict(in);
        const std::string what = absl::StrCat(Name(policy), "/", Name(format), reps ? "/reps" : "/full");
        ASSERT_TRUE(r.ok()) << what << ": " << r.status();
        EXPECT_EQ(r->format, format) << what;
        ExpectSameMask(r->mask, want, what);
        if (reps) {
          EXPECT_LT(r->request_bytes * 8, p.q.bytes.size()) << what;  // representatives are small
        }
      }
    }
  }
}

TEST_F(LiveServer, RepresentativesCarryTheEstimatorsTheyNeed) {
  auto client = Connect(server_->address());
  const Problem p = MakeProblem(12);
  for (auto estimator : {Estimator::kMean, Estimator::kQuest}) {
    for (auto qc : {Coarsening::kMaxL2, Coarsening::kMean}) {
      MaskParams params;
      params.policy = MaskPolicy::kMagnitude;
      params.graph.estimator = estimator;
      params.query_coarsening = qc;
      params.sparsity = 0.6f;
      params.row_begin = 3;
      params.row_end = 12;
      PredictInput in;
      in.block_size = kBlock;
      in.params = params;
      in.q = p.q.view();
      in.k = p.k.view();
      in.representatives = true;
      auto r = client->Predict(in);
      ASSERT_TRUE(r.ok()) << r.status();
      ExpectSameMask(r->mask, Expected(p, params), absl::StrCat(Name(estimator), "/", Name(qc)));
    }
  }
}

// A request built ahead of time (BuildPredictRequest) and sent later gives the mask Predict(input)
// gives; quest so that the key bounds travel too.
TEST_F(LiveServer, PrebuiltRepresentativesRequestGivesTheSameMask) {
  auto client = Connect(server_->address());
  const Problem p = MakeProblem(13);
  PredictInput in;
  in.block_size = kBlock;
  in.params.policy = MaskPolicy::kQuest;
  in.params.sparsity = 0.7f;
  in.q = p.q.view();
  in.k = p.k.view();
  in.representatives = true;
  auto req = client->BuildPredictRequest(in);
  ASSERT_TRUE(req.ok()) << req.status();
  EXPECT_TRUE(req->has_q_rep() && req->has_k_min() && req->has_k_max());
  EXPECT_FALSE(req->has_q());
  for (int i = 0; i < 2; ++i) {  // the same request twice
    auto r = client->Predict(*req);
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectSameMask(r->mask, Expected(p, in.params), "prebuilt");
  }
  in.q = TensorView{};
  EXPECT_EQ(client->BuildPredictRequest(in).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LiveServer, EvictEveryPolicyMatchesTheInProcessBackend) {
  auto client = Connect(server_->address());
  const int64_t n = 600;
  OwnedTensor scores = cli::RandomTensor({1, 2, n}, DType::kF32, 5);
  for (size_t i = 0; i < scores.bytes.size() / 4; ++i) {
    float* v = reinterpret_cast<float*>(scores.bytes.data()) + i;
    *v = std::abs(*v);
  }
  OwnedTensor keys = cli::RandomTensor({1, 2, n, 32}, DType::kF32, 6);
  OwnedTensor window = cli::RandomTensor({1, 4, 16, 32}, DType::kF32, 7);
  TensorView sv = scores.view(), kv = keys.view(), wv = window.view();
  EvictInputs in;
  in.tokens = n;
  in.batch = 1;
  in.kv_heads = 2;
  in.scores = &sv;
  in.keys = &kv;
  in.window = &wv;
  auto backend = MakeCpuBackend();
  for (auto policy : {EvictPolicy::kH2O, EvictPolicy::kStreaming, EvictPolicy::kCab, EvictPolicy::kSnapKV,
                      EvictPolicy::kRandom}) {
    EvictParams params;
    params.policy = policy;
    params.keep = 100;
    params.seed = 9;
    auto want = backend->Evict(in, params);
    ASSERT_TRUE(want.ok()) << want.status();
    auto got = client->Evict(in, params);
    ASSERT_TRUE(got.ok()) << Name(policy) << ": " << got.status();
    EXPECT_EQ(got->keep.per_head, 100) << Name(policy);
    EXPECT_EQ(got->keep.indices, want->indices) << Name(policy);
  }
  EvictParams bad;
  bad.policy = EvictPolicy::kH2O;
  bad.keep = 10;
  EvictInputs none;
  none.tokens = n;
  none.batch = 1;
  none.kv_heads = 2;
  EXPECT_EQ(client->Evict(none, bad).status().code(), absl::StatusCode::kInvalidArgument);  // h2o needs scores
}

TEST_F(LiveServer, SessionChunksGiveTheOneShotMask) {
  auto client = Connect(server_->address());
  for (bool reps : {false, true}) {
    const Problem layer0 = MakeProblem(21), layer1 = MakeProblem(22);
    SessionOptions so;
    so.layers = 2;
    so.heads = 4;
    so.kv_heads = 2;
    so.head_dim = 32;
    so.block_size = kBlock;
    so.params.sparsity = 0.8f;
    so.params.graph.degree = 4;
    so.format = reps ? MaskFormat::kFlex : MaskFormat::kBitmap;
    so.representatives = reps;
    auto session = client->OpenSession(so);
    ASSERT_TRUE(session.ok()) << session.status();
    // Full sessions take any chunk sizes; representatives sessions need whole blocks but the last.
    const std::vector<int64_t> cuts = reps ? std::vector<int64_t>{0, 384, 768, 1000} : std::vector<int64_t>{0, 300, 333, 1000};
    for (size_t c = 0; c + 1 < cuts.size(); ++c) {
      for (int layer = 0; layer < 2; ++layer) {
        const Problem& p = layer == 0 ? layer0 : layer1;
        OwnedTensor q = Tokens(p.q, cuts[c], cuts[c + 1] - cuts[c]), k = Tokens(p.k, cuts[c], cuts[c + 1] - cuts[c]);
        ASSERT_TRUE((*session)->Append(layer, q.view(), k.view()).ok());
      }
    }
    EXPECT_EQ((*session)->tokens(1), 1000);
    for (int layer = 0; layer < 2; ++layer) {
      auto m = (*session)->Mask(layer, 2, 0);
      ASSERT_TRUE(m.ok()) << m.status();
      MaskParams params = so.params;
      params.row_begin = 2;
      ExpectSameMask(m->mask, Expected(layer == 0 ? layer0 : layer1, params), absl::StrCat("layer ", layer, reps ? " reps" : ""));
    }
    if (reps) {  // a representatives session refuses a chunk after a partial block, client-side
      OwnedTensor q = Tokens(layer0.q, 0, 10), k = Tokens(layer0.k, 0, 10);
      EXPECT_EQ((*session)->Append(0, q.view(), k.view()).code(), absl::StatusCode::kFailedPrecondition);
    }
    EXPECT_TRUE((*session)->Close().ok());
    EXPECT_EQ((*session)->reconnects(), 0);
  }
}

TEST_F(LiveServer, BadInputsAndDeadlinesReturnTheirCodes) {
  auto client = Connect(server_->address());
  const Problem p = MakeProblem(31, 256);
  PredictInput in;
  in.block_size = 7;  // below the service's minimum
  in.q = p.q.view();
  in.k = p.k.view();
  auto r = client->Predict(in);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("block_size"), std::string::npos) << r.status();
  in.block_size = kBlock;
  // gRPC deadlines have millisecond resolution: a request that takes far longer than 1 ms
  // (8 MiB of Q/K to move and coarsen) cannot make it.
  const Problem big = MakeProblem(32, 16384);
  PredictInput slow = in;
  slow.q = big.q.view();
  slow.k = big.k.view();
  CallOptions tiny;
  tiny.deadline = absl::Microseconds(1);
  EXPECT_EQ(client->Predict(slow, tiny).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(client->Predict(in).ok());  // and the next request succeeds
  SessionOptions so;
  so.heads = 4;
  so.kv_heads = 3;  // not a divisor of heads
  so.head_dim = 32;
  EXPECT_EQ(client->OpenSession(so).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LiveServer, ConcurrentCallsAndSessionsShareOneClient) {
  auto client = Connect(server_->address());
  const Problem p = MakeProblem(51, 512);
  MaskParams params;
  params.sparsity = 0.7f;
  const BlockMask want = Expected(p, params);
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3; ++i) {
        PredictInput in;
        in.block_size = kBlock;
        in.params = params;
        in.q = p.q.view();
        in.k = p.k.view();
        in.representatives = (i + t) % 2 == 0;
        auto r = client->Predict(in);
        if (r.ok() && r->mask.col_indices == want.col_indices) ++good;
      }
      SessionOptions so;
      so.heads = 4;
      so.kv_heads = 2;
      so.head_dim = 32;
      so.block_size = kBlock;
      so.params = params;
      auto session = client->OpenSession(so);
      if (!session.ok() || !(*session)->Append(0, p.q.view(), p.k.view()).ok()) return;
      auto m = (*session)->Mask(0);
      if (m.ok() && m->mask.col_indices == want.col_indices) ++good;
      if (!(*session)->Close().ok()) --good;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 4 * 4);
  // Closed sessions leave the server's gauge (it may lag the stream's end by a moment).
  double active = -1;
  for (int i = 0; i < 50 && active != 0; ++i) {
    auto v = ScrapeMetric(server_->metrics_port(), "cab_active_sessions");
    ASSERT_TRUE(v.ok());
    active = *v;
    if (active != 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(active, 0);
}

TEST(ClientSecurity, BearerTokenIsSentWhenConfigured) {
  const std::string dir = cab_client_test::MakeTempDir();
  std::ofstream(dir + "/token") << "s3cret\n";
  auto server = ServerLauncher::Start({"--auth_token_file=" + dir + "/token"});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_EQ(Connect((*server)->address())->Info().status().code(), absl::StatusCode::kUnauthenticated);
  ClientOptions wrong;
  wrong.bearer_token = "nope";
  EXPECT_EQ(Connect((*server)->address(), wrong)->Info().status().code(), absl::StatusCode::kUnauthenticated);
  ClientOptions right;
  right.bearer_token = "s3cret";
  auto client = Connect((*server)->address(), right);
  auto info = client->Info();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->auth_required());
  SessionOptions so;
  so.heads = so.kv_heads = 1;
  so.head_dim = 8;
  EXPECT_TRUE(client->OpenSession(so).ok());
}

// A self-signed certificate for localhost / 127.0.0.1 made with the openssl CLI.
bool MakeCert(const std::string& dir, const std::string& name) {
  const std::string cmd = absl::StrCat(
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ", dir, "/", name, ".key -out ", dir, "/", name,
      ".pem -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1");
  return std::system(cmd.c_str()) == 0;
}

TEST(ClientSecurity, TlsWithTheRightCaOnly) {
  const std::string dir = cab_client_test::MakeTempDir();
  if (!MakeCert(dir, "server") || !MakeCert(dir, "other")) GTEST_SKIP() << "openssl CLI not available";
  auto server = ServerLauncher::Start({"--tls_cert=" + dir + "/server.pem", "--tls_key=" + dir + "/server.key"});
  ASSERT_TRUE(server.ok()) << server.status();
  ClientOptions tls;
  tls.tls.enabled = true;
  tls.tls.ca_cert_file = dir + "/server.pem";
  tls.default_deadline = absl::Seconds(5);
  auto info = Connect((*server)->address(), tls)->Info();
  ASSERT_TRUE(info.ok()) << info.status();
  ClientOptions wrong_ca = tls;
  wrong_ca.tls.ca_cert_file = dir + "/other.pem";
  EXPECT_FALSE(Connect((*server)->address(), wrong_ca)->Info().ok());
  ClientOptions plain;
  plain.default_deadline = absl::Seconds(5);
  EXPECT_FALSE(Connect((*server)->address(), plain)->Info().ok());
  ClientOptions missing = tls;
  missing.tls.ca_cert_file = dir + "/absent.pem";
  EXPECT_EQ(Client::Create(missing).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ClientReplicas, RoundRobinReachesEveryReplicaAndSessionsSurviveAReplica) {
  auto a = ServerLauncher::Start(), b = ServerLauncher::Start();
  ASSERT_TRUE(a.ok() && b.ok());
  ClientOptions o;
  o.default_deadline = absl::Seconds(20);
  auto client = Connect(absl::StrCat((*a)->address(), ",", (*b)->address()), o);
  const Problem p = MakeProblem(41, 512);
  PredictInput in;
  in.block_size = kBlock;
  in.q = p.q.view();
  in.k = p.k.view();
  in.representatives = true;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(client->Predict(in).ok());
  const std::string predict_ok = "method=\"Predict\"";
  auto na = ScrapeMetric((*a)->metrics_port(), "cab_requests_total", predict_ok);
  auto nb = ScrapeMetric((*b)->metrics_port(), "cab_requests_total", predict_ok);
  ASSERT_TRUE(na.ok() && nb.ok());
  EXPECT_GT(*na, 0) << "replica a got no Predict";
  EXPECT_GT(*nb, 0) << "replica b got no Predict";
  EXPECT_EQ(*na + *nb, 20);

  // A session on one replica; that replica dies; the next call reopens and replays elsewhere.
  SessionOptions so;
  so.heads = 4;
  so.kv_heads = 2;
  so.head_dim = 32;
  so.block_size = kBlock;
  so.params.sparsity = 0.7f;
  auto session = client->OpenSession(so);
  ASSERT_TRUE(session.ok()) << session.status();
  OwnedTensor q1 = Tokens(p.q, 0, 300), k1 = Tokens(p.k, 0, 300);
  ASSERT_TRUE((*session)->Append(0, q1.view(), k1.view()).ok());
  auto on_a = ScrapeMetric((*a)->metrics_port(), "cab_active_sessions");
  ASSERT_TRUE(on_a.ok());
  const std::string old_id = (*session)->session_id();
  ((*on_a > 0) ? *a : *b)->Kill(SIGKILL);
  auto m = (*session)->Mask(0);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*session)->reconnects(), 1);
  MaskParams params = so.params;
  Problem first{Tokens(p.q, 0, 300), Tokens(p.k, 0, 300)};
  ExpectSameMask(m->mask, Expected(first, params), "after failover");
  // The replayed stream holds representatives; a full chunk that starts mid-block is folded in
  // by a resync before the next mask.
  OwnedTensor q2 = Tokens(p.q, 300, 212), k2 = Tokens(p.k, 300, 212);
  ASSERT_TRUE((*session)->Append(0, q2.view(), k2.view()).ok());
  auto m2 = (*session)->Mask(0);
  ASSERT_TRUE(m2.ok()) << m2.status();
  ExpectSameMask(m2->mask, Expected(p, params), "after resync");
  EXPECT_TRUE(client->Predict(in).ok());  // unary calls keep working on the survivor
  EXPECT_TRUE((*session)->Close().ok());
  (void)old_id;
}

}  // namespace
}  // namespace cab

namespace cab {
namespace {

SessionOptions SmallSession(bool reps) {
  SessionOptions so;
  so.heads = 4;
  so.kv_heads = 2;
  so.head_dim = 32;
  so.block_size = kBlock;
  so.params.sparsity = 0.7f;
  so.params.policy = MaskPolicy::kQuest;  // needs the key min/max: the replay must carry them
  so.representatives = reps;
  return so;
}

TEST(ClientReplicas, RepresentativesSessionSurvivesADrainedReplica) {
  auto a = ServerLauncher::Start(), b = ServerLauncher::Start();
  ASSERT_TRUE(a.ok() && b.ok());
  auto client = Connect(absl::StrCat((*a)->address(), ",", (*b)->address()));
  const Problem p = MakeProblem(61, 640);
  auto session = client->OpenSession(SmallSession(true));
  ASSERT_TRUE(session.ok()) << session.status();
  OwnedTensor q1 = Tokens(p.q, 0, 384), k1 = Tokens(p.k, 0, 384);
  ASSERT_TRUE((*session)->Append(0, q1.view(), k1.view()).ok());
  auto on_a = ScrapeMetric((*a)->metrics_port(), "cab_active_sessions");
  ASSERT_TRUE(on_a.ok());
  ((*on_a > 0) ? *a : *b)->Kill(SIGTERM);  // drains (grace 1 s) and exits; Kill waits for the exit
  OwnedTensor q2 = Tokens(p.q, 384, 256), k2 = Tokens(p.k, 384, 256);
  ASSERT_TRUE((*session)->Append(0, q2.view(), k2.view()).ok());  // reopens, replays, chunk included
  EXPECT_EQ((*session)->reconnects(), 1);
  auto m = (*session)->Mask(0);
  ASSERT_TRUE(m.ok()) << m.status();
  ExpectSameMask(m->mask, Expected(p, SmallSession(true).params), "representatives after drain");
}

TEST_F(LiveServer, SessionCallDeadlineCancelsTheStreamAndTheNextCallRecovers) {
  auto client = Connect(server_->address());
  const Problem p = MakeProblem(71, 8192);
  auto session = client->OpenSession(SmallSession(false));
  ASSERT_TRUE(session.ok()) << session.status();
  ASSERT_TRUE((*session)->Append(0, p.q.view(), p.k.view()).ok());
  CallOptions tiny;
  tiny.deadline = absl::Microseconds(1);
  EXPECT_EQ((*session)->Mask(0, 0, 0, false, tiny).status().code(), absl::StatusCode::kDeadlineExceeded);
  auto m = (*session)->Mask(0);  // a new stream with the replayed state
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*session)->reconnects(), 0);  // not an UNAVAILABLE reconnect
  ExpectSameMask(m->mask, Expected(p, SmallSession(false).params), "after a deadline");
}

}  // namespace
}  // namespace cab
