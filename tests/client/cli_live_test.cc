// The cab-client binary against a real server: exit codes (0 ok, 1 RPC error, 2 usage), --json
// summaries, and file inputs (.safetensors and .npy) for predict and evict.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "cab/tensor_file.h"
#include "gtest/gtest.h"
#include "server_launcher.h"
#include "synthetic.h"

#ifndef CAB_CLIENT_BINARY
#error "CAB_CLIENT_BINARY must name the cab-client under test"
#endif

namespace cab {
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
  int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class CliLive : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = cab_client_test::ServerLauncher::Start();
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    flag_ = "--server=" + server_->address();
  }
  std::unique_ptr<cab_client_test::ServerLauncher> server_;
  std::string flag_;
};

TEST_F(CliLive, ExitCodesAndJson) {
  CliRun info = CabClient("info --json " + flag_);
  EXPECT_EQ(info.code, 0);
  EXPECT_NE(info.out.find("\"backend\":\"cpu\""), std::string::npos) << info.out;

  CliRun predict = CabClient("predict --json --policy=quest --format=flex --seq_len=512 --heads=2 --head_dim=16 " + flag_);
  EXPECT_EQ(predict.code, 0);
  EXPECT_NE(predict.out.find("\"policy\":\"quest\""), std::string::npos) << predict.out;
  EXPECT_NE(predict.out.find("\"format\":\"flex\""), std::string::npos) << predict.out;
  EXPECT_NE(predict.out.find("\"kept_blocks\":"), std::string::npos) << predict.out;

  CliRun stream = CabClient("predict --json --chunks=3 --representatives --seq_len=700 --heads=2 --head_dim=16 " + flag_);
  EXPECT_EQ(stream.code, 0);
  EXPECT_NE(stream.out.find("\"stream\":true"), std::string::npos) << stream.out;

  EXPECT_EQ(CabClient("predict --no_such_flag " + flag_).code, 2);
  EXPECT_EQ(CabClient("predict --seq_len=abc " + flag_).code, 2);
  EXPECT_EQ(CabClient("no-such-command").code, 2);
  EXPECT_EQ(CabClient("").code, 2);
  EXPECT_EQ(CabClient("help").code, 0);
  // The server refuses a block size of 8: an RPC error.
  EXPECT_EQ(CabClient("predict --block_size=8 --seq_len=256 --heads=1 --head_dim=8 " + flag_).code, 1);
  // Nobody listens on port 1.
  EXPECT_EQ(CabClient("info --deadline_ms=2000 --server=127.0.0.1:1").code, 1);
}

TEST_F(CliLive, FileInputs) {
  const std::string dir = cab_client_test::MakeTempDir();
  OwnedTensor q = cli::RandomTensor({1, 2, 300, 16}, DType::kF32, 1), k = cli::RandomTensor({1, 1, 300, 16}, DType::kF32, 2);
  std::ofstream(dir + "/qk.safetensors", std::ios::binary) << WriteSafetensors({{"q", q}, {"k", k}});
  std::ofstream(dir + "/q.npy", std::ios::binary) << WriteNpy(q);
  std::ofstream(dir + "/k.npy", std::ios::binary) << WriteNpy(k);
  CliRun a = CabClient(absl::StrCat("predict --json --block_size=32 --input=", dir, "/qk.safetensors ", flag_));
  CliRun b = CabClient(absl::StrCat("predict --json --block_size=32 --input=", dir, "/q.npy,", dir, "/k.npy ", flag_));
  EXPECT_EQ(a.code, 0);
  EXPECT_EQ(b.code, 0);
  EXPECT_NE(a.out.find("\"kv_heads\":1"), std::string::npos) << a.out;
  // Same tensors, same mask summary (the timings differ).
  auto kept = [](const std::string& s) { return s.substr(s.find("\"density\""), s.find("\"client_seconds\"") - s.find("\"density\"")); };
  EXPECT_EQ(kept(a.out), kept(b.out));
  EXPECT_EQ(CabClient(absl::StrCat("predict --input=", dir, "/missing.safetensors ", flag_)).code, 2);

  OwnedTensor scores = cli::RandomTensor({1, 1, 300}, DType::kF32, 3);
  std::ofstream(dir + "/evict.safetensors", std::ios::binary)
      << WriteSafetensors({{"scores", scores}, {"keys", k}});
  for (const char* policy : {"h2o", "streaming", "cab", "random"}) {
    CliRun e = CabClient(absl::StrCat("evict --json --keep=40 --policy=", policy, " --input=", dir, "/evict.safetensors ", flag_));
    EXPECT_EQ(e.code, 0) << policy;
    EXPECT_NE(e.out.find("\"per_head\":40"), std::string::npos) << policy << ": " << e.out;
  }
  CliRun snap = CabClient("evict --json --policy=snapkv --keep=64 --seq_len=512 --heads=2 --kv_heads=1 --head_dim=16 " + flag_);
  EXPECT_EQ(snap.code, 0);
}

TEST_F(CliLive, BridgeDemoTable) {
  CliRun r = CabClient("bridge-demo --json --sparsities=0.5,0.99 --policies=cab,magnitude,streaming " + flag_);
  ASSERT_EQ(r.code, 0);
  // Every policy answers; at 50% sparsity magnitude keeps the bridge (rank 16 of 255 candidates).
  EXPECT_NE(r.out.find("\"policy\":\"cab\""), std::string::npos);
  EXPECT_NE(r.out.find("\"policy\":\"streaming\""), std::string::npos);
  const size_t mag = r.out.find("\"policy\":\"magnitude\"");
  ASSERT_NE(mag, std::string::npos);
  EXPECT_EQ(r.out.find("\"sparsity\":0.5,\"bridge_kept\":true", mag), r.out.find("\"sparsity\":0.5", mag));
}

}  // namespace
}  // namespace cab
