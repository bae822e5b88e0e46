// Flag parsing of cab-client, the target rewriting for replica lists and the service config.
#include "args.h"
#include "channel.h"
#include "common.h"
#include "gtest/gtest.h"
#include "json_value.h"

namespace cab {
namespace {

using cli::Args;

absl::StatusOr<Args> Parse(std::vector<std::string> v) {
  v.insert(v.begin(), "predict");
  std::vector<char*> argv;
  for (auto& s : v) argv.push_back(s.data());
  return Args::Parse(static_cast<int>(argv.size()), argv.data());
}

TEST(Args, ReadsValuesBareFlagsAndDefaults) {
  auto a = Parse({"--seq_len=128", "--json", "--sparsity=0.5", "--server=h:1"});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a->Int("seq_len", 7), 128);
  EXPECT_EQ(*a->Int("heads", 7), 7);
  EXPECT_TRUE(a->Has("json"));
  EXPECT_EQ(*a->Double("sparsity", 0), 0.5);
  EXPECT_EQ(a->String("server", ""), "h:1");
  EXPECT_TRUE(a->Finish().ok());
}

TEST(Args, UsageErrorsNameTheFlag) {
  EXPECT_FALSE(Parse({"positional"}).ok());
  EXPECT_FALSE(Parse({"--a=1", "--a=2"}).ok());
  auto a = Parse({"--seq_len=abc", "--typo=1", "--causal=maybe"});
  ASSERT_TRUE(a.ok());
  auto n = a->Int("seq_len", 1);
  EXPECT_NE(n.status().message().find("--seq_len"), std::string::npos);
  EXPECT_FALSE(a->Bool("causal", true).ok());
  auto fin = a->Finish();
  EXPECT_NE(fin.message().find("--typo"), std::string::npos);
}

TEST(Args, MaskParamsFromFlags) {
  auto a = Parse({"--policy=quest", "--sparsity=0.9", "--estimator=mean", "--curvature=forman", "--graph_degree=8",
                  "--causal=false", "--policy_seed=5"});
  ASSERT_TRUE(a.ok());
  auto p = cli::ReadMaskParams(*a);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->policy, MaskPolicy::kQuest);
  EXPECT_FLOAT_EQ(p->sparsity, 0.9f);
  EXPECT_EQ(p->graph.estimator, Estimator::kMean);
  EXPECT_EQ(p->graph.curvature, CurvatureKind::kForman);
  EXPECT_EQ(p->graph.degree, 8);
  EXPECT_FALSE(p->graph.causal);
  EXPECT_EQ(p->seed, 5u);
  auto bad = Parse({"--policy=nope"});
  EXPECT_FALSE(cli::ReadMaskParams(*bad).ok());
  auto bad_sparsity = Parse({"--sparsity=1.5"});
  EXPECT_FALSE(cli::ReadMaskParams(*bad_sparsity).ok());
}

TEST(Args, ClientOptionsFromFlags) {
  auto a = Parse({"--server=10.0.0.1:5,10.0.0.2:6", "--token=abc", "--deadline_ms=250", "--lb_policy=pick_first",
                  "--ca_cert=/x.pem", "--keepalive_ms=10000", "--retries=2"});
  auto o = cli::ReadClientOptions(*a);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->target, "10.0.0.1:5,10.0.0.2:6");
  EXPECT_EQ(o->bearer_token, "abc");
  EXPECT_EQ(o->default_deadline, absl::Milliseconds(250));
  EXPECT_EQ(o->load_balancing_policy, "pick_first");
  EXPECT_TRUE(o->tls.enabled);
  EXPECT_EQ(o->tls.ca_cert_file, "/x.pem");
  EXPECT_EQ(o->keepalive_time_ms, 10000);
  EXPECT_EQ(o->max_attempts, 2);
  auto bad = Parse({"--retries=9"});
  EXPECT_FALSE(cli::ReadClientOptions(*bad).ok());
}

TEST(Target, ReplicaListsBecomeAddressUris) {
  using client_internal::ResolveTarget;
  EXPECT_EQ(*ResolveTarget("127.0.0.1:50051"), "127.0.0.1:50051");
  EXPECT_EQ(*ResolveTarget("dns:///cab.svc:50051"), "dns:///cab.svc:50051");
  EXPECT_EQ(*ResolveTarget("127.0.0.1:1, localhost:2"), "ipv4:///127.0.0.1:1,127.0.0.1:2");
  EXPECT_EQ(*ResolveTarget("[::1]:1,[::1]:2"), "ipv6:///[::1]:1,[::1]:2");
  for (const char* bad : {"", "a.example:1,b.example:2", "127.0.0.1,127.0.0.2:1", "127.0.0.1:0x,1.2.3.4:1",
                          "127.0.0.1:1,[::1]:2", "127.0.0.1:1,,127.0.0.1:2"}) {
    auto r = ResolveTarget(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("target"), std::string::npos);
  }
}

TEST(ServiceConfig, RetriesOnlyTheIdempotentUnaryCalls) {
  ClientOptions o;
  auto json = client_internal::ParseJson(client_internal::ServiceConfigJson(o));
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(json->fields.at("loadBalancingConfig").items.at(0).fields.count("round_robin"), 1u);
  const auto& mc = json->fields.at("methodConfig").items.at(0);
  std::vector<std::string> methods;
  for (const auto& n : mc.fields.at("name").items) methods.push_back(n.fields.at("method").text);
  EXPECT_EQ(methods, (std::vector<std::string>{"Predict", "Evict", "Info"}));
  const auto& retry = mc.fields.at("retryPolicy");
  EXPECT_EQ(retry.fields.at("maxAttempts").text, "4");
  EXPECT_EQ(retry.fields.at("retryableStatusCodes").items.at(0).text, "UNAVAILABLE");
  EXPECT_EQ(json->fields.at("healthCheckConfig").fields.at("serviceName").text, "cab.v1.MaskPredictor");
  o.max_attempts = 1;
  o.health_check = false;
  o.load_balancing_policy = "pick_first";
  auto no_retry = client_internal::ParseJson(client_internal::ServiceConfigJson(o));
  ASSERT_TRUE(no_retry.ok());
  EXPECT_EQ(no_retry->fields.count("methodConfig"), 0u);
  EXPECT_EQ(no_retry->fields.count("healthCheckConfig"), 0u);
}

TEST(MaskFormat, NamesRoundTrip) {
  for (auto f : {MaskFormat::kBsr, MaskFormat::kBitmap, MaskFormat::kFlex}) EXPECT_EQ(*ParseMaskFormat(Name(f)), f);
  EXPECT_FALSE(ParseMaskFormat("csr").ok());
}

}  // namespace
}  // namespace cab

// Client-side parallel coarsening against the kernels' single-threaded CoarsenCpu, and block
// concatenation against coarsening the concatenated tokens.
#include "parallel_coarsen.h"
#include "synthetic.h"

namespace cab {
namespace {

void ExpectSameCoarse(const CoarseBlocks& a, const CoarseBlocks& b) {
  EXPECT_EQ(a.batch, b.batch);
  EXPECT_EQ(a.heads, b.heads);
  EXPECT_EQ(a.blocks, b.blocks);
  EXPECT_EQ(a.dim, b.dim);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.maxl2, b.maxl2);
  EXPECT_EQ(a.mean, b.mean);
  EXPECT_EQ(a.kmin, b.kmin);
  EXPECT_EQ(a.kmax, b.kmax);
  EXPECT_EQ(a.best_norm2, b.best_norm2);
  EXPECT_EQ(a.count, b.count);
}

TEST(ParallelCoarsen, EqualsCoarsenCpu) {
  for (DType dt : {DType::kF32, DType::kBF16}) {
    OwnedTensor x = cli::RandomTensor({2, 3, 200, 16}, dt, 4);
    auto want = CoarsenCpu(x.view(), 64);
    ASSERT_TRUE(want.ok());
    for (int threads : {1, 2, 5}) {
      auto got = client_internal::CoarsenParallel(x.view(), 64, threads);
      ASSERT_TRUE(got.ok());
      ExpectSameCoarse(*got, *want);
    }
  }
}

TEST(ParallelCoarsen, ConcatOnBlockBoundaryEqualsOneShot) {
  OwnedTensor x = cli::RandomTensor({1, 2, 200, 8}, DType::kF32, 5);
  auto whole = CoarsenCpu(x.view(), 32);
  ASSERT_TRUE(whole.ok());
  auto part = [&](int64_t start, int64_t len) {
    OwnedTensor s{x.dtype, {1, 2, len, 8}, ""};
    for (int h = 0; h < 2; ++h) s.bytes.append(x.bytes.data() + (h * 200 + start) * 32, len * 32);
    return s;
  };
  OwnedTensor a = part(0, 96), b = part(96, 104);
  auto state = client_internal::CoarsenParallel(a.view(), 32, 2);
  auto more = client_internal::CoarsenParallel(b.view(), 32, 2);
  ASSERT_TRUE(state.ok() && more.ok());
  ASSERT_TRUE(client_internal::ConcatBlocks(*state, *more).ok());
  ExpectSameCoarse(*state, *whole);
  // Not on a block boundary: refused.
  OwnedTensor c = part(0, 100);
  auto partial = CoarsenCpu(c.view(), 32);
  EXPECT_EQ(client_internal::ConcatBlocks(*partial, *more).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace cab
