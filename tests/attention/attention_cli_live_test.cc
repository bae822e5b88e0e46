// `cab-client attention` against a real cab-server (CPU backend) on loopback: properties of the
// figures it prints. A dense mask and keeping every token must give the dense answer exactly
// (error 0, recall 1, density 1); a sparse mask gives recall and density strictly inside (0, 1).
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server_launcher.h"

#ifndef CAB_CLIENT_BINARY
#error "CAB_CLIENT_BINARY must name the cab-client under test"
#endif

namespace cab::attention {
namespace {

struct CliRun {
  int code = -1;
  std::string out;
};

CliRun CabClient(const std::string& args) {
  CliRun r;
  FILE* p = popen(absl::StrCat(CAB_CLIENT_BINARY, " ", args, " 2>/dev/null").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The number after "key": inside the object "section":{...} of a one-line JSON summary; NaN if absent.
double Field(const std::string& json, const std::string& section, const std::string& key) {
  const size_t s = json.find("\"" + section + "\":{");
  if (s == std::string::npos) return NAN;
  const size_t e = json.find('}', s);
  const size_t k = json.find("\"" + key + "\":", s);
  if (k == std::string::npos || k > e) return NAN;
  return std::strtod(json.c_str() + k + key.size() + 3, nullptr);
}

class AttentionCli : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = cab_client_test::ServerLauncher::Start();
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    flags_ = "--json --device=cpu --seq_len=320 --heads=4 --kv_heads=2 --head_dim=32 --block_size=64 --server=" +
             server_->address();
  }
  std::unique_ptr<cab_client_test::ServerLauncher> server_;
  std::string flags_;
};

TEST_F(AttentionCli, DenseMaskAndFullKeepGiveTheDenseAnswer) {
  const CliRun r = CabClient("attention --policy=dense --keep=320 " + flags_);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "prefill", "rel_error"), 0.0) << r.out;
  EXPECT_NEAR(Field(r.out, "prefill", "recall"), 1.0, 1e-9) << r.out;
  EXPECT_NEAR(Field(r.out, "prefill", "density"), 1.0, 1e-9) << r.out;
  EXPECT_EQ(Field(r.out, "decode", "keep"), 320) << r.out;
  EXPECT_EQ(Field(r.out, "decode", "rel_error"), 0.0) << r.out;
  EXPECT_NEAR(Field(r.out, "decode", "recall"), 1.0, 1e-9) << r.out;
}

TEST_F(AttentionCli, SparseMaskAndEvictionKeepPartOfTheMass) {
  for (const char* policy : {"cab", "magnitude", "streaming"}) {
    const CliRun r = CabClient(absl::StrCat("attention --policy=", policy, " --sparsity=0.6 --keep=40 --evict_policy=h2o ", flags_));
    ASSERT_EQ(r.code, 0) << policy << ": " << r.out;
    const double density = Field(r.out, "prefill", "density"), recall = Field(r.out, "prefill", "recall");
    EXPECT_GT(density, 0.0) << r.out;
    EXPECT_LT(density, 1.0) << r.out;
    EXPECT_GT(recall, 0.0) << r.out;
    EXPECT_LT(recall, 1.0) << r.out;
    EXPECT_GT(Field(r.out, "prefill", "rel_error"), 0.0) << r.out;
    EXPECT_EQ(Field(r.out, "decode", "keep"), 40) << r.out;
    EXPECT_GT(Field(r.out, "decode", "recall"), 0.0) << r.out;
    EXPECT_LT(Field(r.out, "decode", "recall"), 1.0) << r.out;
  }
}

TEST_F(AttentionCli, UsageErrorsExitTwo) {
  EXPECT_EQ(CabClient("attention --device=tpu " + flags_).code, 2);
  EXPECT_EQ(CabClient("attention --decode_queries=0 " + flags_).code, 2);
  EXPECT_EQ(CabClient("attention --no_such_flag " + flags_).code, 2);
}

}  // namespace
}  // namespace cab::attention
