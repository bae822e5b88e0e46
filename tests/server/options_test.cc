// Flags and their CAB_<FLAG> environment variables: the environment sets a flag, the command line
// wins over it, bad values name the variable or flag.
#include <map>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "options.h"

namespace cab::server {
namespace {

using ::testing::HasSubstr;

class OptionsTest : public ::testing::Test {
 protected:
  absl::FlagSaver saver_;  // every test starts from and leaves the defaults
};

std::function<const char*(const char*)> FakeEnv(std::map<std::string, std::string> vars) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [shared](const char* name) -> const char* {
    auto it = shared->find(name);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

TEST_F(OptionsTest, DefaultsMatchTheContract) {
  auto o = ReadOptions();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->listen, "127.0.0.1:50051");
  EXPECT_EQ(o->metrics_listen, "127.0.0.1:9464");
  EXPECT_EQ(o->backend, "auto");
  EXPECT_EQ(o->drain_grace_s, 10);
  EXPECT_EQ(o->drain_lame_duck_s, 1);
}

TEST_F(OptionsTest, EveryFlagHasAnEnvironmentVariable) {
  for (const std::string& name : FlagNames()) {
    EXPECT_NE(absl::FindCommandLineFlag(name), nullptr) << name;
  }
  ASSERT_TRUE(ApplyEnvironment(FakeEnv({{"CAB_LISTEN", "0.0.0.0:7000"},
                                        {"CAB_METRICS_LISTEN", ""},
                                        {"CAB_BACKEND", "cpu"},
                                        {"CAB_MAX_TOKENS", "4096"},
                                        {"CAB_SESSION_IDLE_TIMEOUT_S", "2.5"},
                                        {"CAB_MAX_QUEUE_DELAY_US", "50"}}))
                  .ok());
  auto o = ReadOptions();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->listen, "0.0.0.0:7000");
  EXPECT_EQ(o->metrics_listen, "") << "an empty variable disables metrics";
  EXPECT_EQ(o->backend, "cpu");
  EXPECT_EQ(o->limits.max_tokens, 4096);
  EXPECT_EQ(o->session_idle_timeout_s, 2.5);
  EXPECT_EQ(o->max_queue_delay_us, 50);
}

TEST_F(OptionsTest, CommandLineWinsOverEnvironment) {
  ASSERT_TRUE(ApplyEnvironment(FakeEnv({{"CAB_BACKEND", "cuda"}, {"CAB_THREADS", "3"}})).ok());
  const char* argv[] = {"cab-server", "--backend=cpu"};
  absl::ParseCommandLine(2, const_cast<char**>(argv));
  auto o = ReadOptions();
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->backend, "cpu");
  EXPECT_EQ(o->threads, 3) << "variables not overridden still apply";
}

TEST_F(OptionsTest, UnparsableVariableNamesIt) {
  auto s = ApplyEnvironment(FakeEnv({{"CAB_MAX_HEADS", "many"}}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("CAB_MAX_HEADS"));
}

TEST_F(OptionsTest, ValidationNamesTheFlag) {
  struct Case {
    std::function<void(ServerOptions*)> set;
    const char* flag;
  };
  const std::vector<Case> cases = {
      {[](auto* o) { o->backend = "tpu"; }, "--backend"},
      {[](auto* o) { o->threads = -1; }, "--threads"},
      {[](auto* o) { o->limits.max_tokens = 0; }, "--max_tokens"},
      {[](auto* o) { o->limits.max_message_bytes = int64_t{1} << 40; }, "--max_message_bytes"},
      {[](auto* o) { o->session_idle_timeout_s = 0; }, "--session_idle_timeout_s"},
      {[](auto* o) { o->tls_cert = "cert.pem"; }, "--tls_cert"},
      {[](auto* o) { o->tls_client_ca = "ca.pem"; }, "--tls_client_ca"},
      {[](auto* o) { o->drain_grace_s = -1; }, "--drain_grace_s"},
      {[](auto* o) { o->drain_lame_duck_s = -0.5; }, "--drain_lame_duck_s"},
      {[](auto* o) { o->max_batch = 0; }, "--max_batch"},
      {[](auto* o) { o->cuda_devices = "0,x"; }, "--cuda_devices"},
      {[](auto* o) { o->cuda_devices = "-1"; }, "--cuda_devices"},
      {[](auto* o) { o->cuda_devices = "0,,1"; }, "--cuda_devices"},
  };
  for (const Case& c : cases) {
    ServerOptions o;
    c.set(&o);
    auto s = ValidateOptions(o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.flag;
    EXPECT_THAT(s.message(), HasSubstr(c.flag));
  }
  EXPECT_TRUE(ValidateOptions(ServerOptions{}).ok());
}

TEST_F(OptionsTest, PluginOptionsCarryBatchingAndDevices) {
  ServerOptions o;
  EXPECT_EQ(PluginOptions(o), "max_batch=8;max_queue_delay_us=200") << "no devices key: every visible GPU";
  o.max_batch = 4;
  o.cuda_devices = "0,0,1";
  ASSERT_TRUE(ValidateOptions(o).ok());
  EXPECT_EQ(PluginOptions(o), "max_batch=4;max_queue_delay_us=200;devices=0,0,1");
  ASSERT_TRUE(ApplyEnvironment(FakeEnv({{"CAB_CUDA_DEVICES", "1"}})).ok());
  auto read = ReadOptions();
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->cuda_devices, "1");
}

}  // namespace
}  // namespace cab::server
