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
  o.max_attempts = 1;
  o.load_balancing_policy = "pick_first";
  auto no_retry = client_internal::ParseJson(client_internal::ServiceConfigJson(o));
  ASSERT_TRUE(no_retry.ok());
  EXPECT_EQ(no_retry->fields.count("methodConfig"), 0u);
}

TEST(MaskFormat, NamesRoundTrip) {
  for (auto f : {MaskFormat::kBsr, MaskFormat::kBitmap, MaskFormat::kFlex}) EXPECT_EQ(*ParseMaskFormat(Name(f)), f);
  EXPECT_FALSE(ParseMaskFormat("csr").ok());
}

}  // namespace
}  // namespace cab
