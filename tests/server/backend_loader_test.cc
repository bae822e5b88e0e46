// Backend selection: cpu always works; cuda without a loadable plugin fails with a message naming
// the plugin; auto falls back to cpu. A fake plugin checks the ABI gate and error pass-through.
#include "backend_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

#ifndef CAB_FAKE_PLUGIN_DIR
#error "CAB_FAKE_PLUGIN_DIR must name the directory of the fake plugins"
#endif

namespace cab::server {
namespace {

using ::testing::HasSubstr;

TEST(BackendLoader, CpuAlways) {
  BackendRequest r;
  r.kind = "cpu";
  auto b = MakeBackend(r);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->Name(), "cpu");
}

TEST(BackendLoader, CudaWithoutPluginFailsAutoFallsBack) {
  BackendRequest r;
  r.kind = "cuda";
  r.plugin_dir = ::testing::TempDir() + "/no-such-dir";
  auto b = MakeBackend(r);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(b.status().message(), HasSubstr("libcab_cuda_backend.so"));
  r.kind = "auto";
  auto a = MakeBackend(r);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)->Name(), "cpu");
}

TEST(BackendLoader, SearchPath) {
  BackendRequest r;
  r.executable_dir = "/opt/cab/bin";
  EXPECT_THAT(PluginSearchPath(r), ::testing::ElementsAre("/opt/cab/bin", "/opt/cab/bin/../lib"));
  r.plugin_dir = "/plugins";
  EXPECT_THAT(PluginSearchPath(r), ::testing::ElementsAre("/plugins"));
}

TEST(BackendLoader, PluginRefusalAndAbiMismatchAreReported) {
  BackendRequest r;
  r.kind = "cuda";
  r.plugin_dir = std::string(CAB_FAKE_PLUGIN_DIR) + "/refusing";
  auto refused = MakeBackend(r);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("no CUDA device found"));
  r.plugin_dir = std::string(CAB_FAKE_PLUGIN_DIR) + "/old_abi";
  auto old = MakeBackend(r);
  EXPECT_EQ(old.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(old.status().message(), HasSubstr("ABI version"));
}

}  // namespace
}  // namespace cab::server
