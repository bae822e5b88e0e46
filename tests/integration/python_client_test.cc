// A client in another language: python_client.py (Debian's python3-grpcio, stubs generated at test
// time with grpc_tools.protoc) sends the same inputs, encoded by numpy, and must get the same mask
// bytes as the C++ path, for every format and on a stream.
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "mask_decode.h"
#include "problem.h"
#include "rpc_helpers.h"
#include "stream_helpers.h"

namespace cab_it {
namespace {

std::string Slurp(const std::string& path) { return ReadFileOrEmpty(path); }

void ExpectSameTensor(const cab::v1::Tensor& py, const cab::v1::Tensor& cc, const char* what) {
  EXPECT_EQ(py.dtype(), cc.dtype()) << what;
  EXPECT_EQ(std::vector<int64_t>(py.shape().begin(), py.shape().end()),
            std::vector<int64_t>(cc.shape().begin(), cc.shape().end()))
      << what;
  EXPECT_TRUE(py.data() == cc.data()) << what << ": mask bytes differ";
}

void ExpectSameMask(const cab::v1::BlockMask& py, const cab::v1::BlockMask& cc) {
  EXPECT_EQ(py.format(), cc.format());
  EXPECT_EQ(py.rows(), cc.rows());
  EXPECT_EQ(py.cols(), cc.cols());
  ExpectSameTensor(py.row_offsets(), cc.row_offsets(), "row_offsets");
  ExpectSameTensor(py.col_indices(), cc.col_indices(), "col_indices");
  ExpectSameTensor(py.bitmap(), cc.bitmap(), "bitmap");
  ExpectSameTensor(py.kv_num_blocks(), cc.kv_num_blocks(), "kv_num_blocks");
  ExpectSameTensor(py.kv_indices(), cc.kv_indices(), "kv_indices");
  EXPECT_DOUBLE_EQ(py.density(), cc.density());
}

// Raw fp32 inputs and their description for python_client.py, in dir/in (dir/out for its answers).
void WriteInputs(const Problem& pb, const std::string& dir) {
  const std::string in = dir + "/in", out = dir + "/out";
  ASSERT_EQ(::mkdir(in.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(out.c_str(), 0755), 0);
  const ProblemShape& shape = pb.shape;
  std::ofstream(in + "/q.f32", std::ios::binary)
      .write(reinterpret_cast<const char*>(pb.q.values.data()), pb.q.values.size() * 4);
  std::ofstream(in + "/k.f32", std::ios::binary)
      .write(reinterpret_cast<const char*>(pb.k.values.data()), pb.k.values.size() * 4);
  std::ofstream(in + "/meta.json") << "{\"q_shape\": [" << shape.batch << ", " << shape.heads << ", " << shape.tokens
                                   << ", " << shape.head_dim << "], \"k_shape\": [" << shape.batch << ", "
                                   << shape.kv_heads << ", " << shape.tokens << ", " << shape.head_dim
                                   << "], \"dtype\": \"fp16\", \"block_size\": " << shape.block_size
                                   << ", \"policy\": \"MASK_POLICY_CAB\", \"sparsity\": 0.75, \"graph_degree\": 5}\n";
}

absl::StatusOr<std::unique_ptr<ChildProcess>> StartPython(const ServerProcess& server, const std::string& dir,
                                                          const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {CAB_IT_PYTHON, std::string(CAB_IT_SOURCE_DIR) + "/python_client.py",
                                   "--server=" + server.address(), std::string("--proto_root=") + CAB_PROTO_ROOT,
                                   "--gen_dir=" + dir + "/gen", "--input_dir=" + dir + "/in",
                                   "--out_dir=" + dir + "/out"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return ChildProcess::Start(argv, dir + "/python.log");
}

Problem PythonProblem() {
  ProblemShape shape;
  shape.dtype = cab::DType::kF16;
  shape.tokens = 900;
  // Raw fp32 values; each side converts to fp16 itself (numpy in Python, cab::FloatToHalf in C++).
  Problem pb = MakeProblem(shape);
  pb.q = RandomTokens(pb.q.shape, 501);
  pb.k = RandomTokens(pb.k.shape, 502);
  return pb;
}

using PythonClientTest = ServerTest;

TEST_F(PythonClientTest, PythonGetsTheSameMaskBytesAsCpp) {
  const Problem pb = PythonProblem();
  TestMaskParams p;
  p.policy = cab::MaskPolicy::kCab;
  p.sparsity = 0.75f;
  p.graph_degree = 5;

  const std::string dir = MakeTempDir("python");
  WriteInputs(pb, dir);
  auto py = StartPython(*server_, dir, {});
  ASSERT_TRUE(py.ok()) << py.status();
  const auto code = (*py)->WaitExit(absl::Seconds(120));
  ASSERT_TRUE(code.has_value()) << "python client still running after 120 s:\n" << (*py)->Log();
  ASSERT_EQ(*code, 0) << "python client failed:\n" << (*py)->Log();

  const std::string out = dir + "/out";
  cab::v1::InfoResponse info;
  ASSERT_TRUE(info.ParseFromString(Slurp(out + "/info.bin")));
  EXPECT_EQ(info.backend(), "cpu");

  // The C++ path: cab::FloatToHalf encoding, the generated C++ stubs.
  const Problem rounded = [&] {
    Problem r = pb;
    r.q = RoundTrip(pb.q, cab::DType::kF16);
    r.k = RoundTrip(pb.k, cab::DType::kF16);
    return r;
  }();
  auto want = ReferenceMask(rounded, p);
  ASSERT_TRUE(want.ok()) << want.status();
  const std::vector<std::pair<std::string, cab::v1::MaskFormat>> formats = {
      {"bsr", cab::v1::MASK_FORMAT_BSR}, {"bitmap", cab::v1::MASK_FORMAT_BITMAP}, {"flex", cab::v1::MASK_FORMAT_FLEX}};
  for (const auto& [name, format] : formats) {
    SCOPED_TRACE(name);
    cab::v1::PredictResponse from_py, from_cc;
    ASSERT_TRUE(from_py.ParseFromString(Slurp(out + "/predict_" + name + ".bin")));
    auto ctx = Context();
    const grpc::Status s = stub_->Predict(ctx.get(), FullRequest(rounded, p, format), &from_cc);
    ASSERT_TRUE(s.ok()) << Describe(s);
    ExpectSameMask(from_py.mask(), from_cc.mask());
    auto decoded = DecodeWireMask(from_py.mask());
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(MaskDiff(*decoded, FromCab(want->mask)), "");
  }
  cab::v1::StreamResponse streamed;
  ASSERT_TRUE(streamed.ParseFromString(Slurp(out + "/stream_bsr.bin"))) << (*py)->Log();
  ASSERT_TRUE(streamed.has_mask());
  EXPECT_EQ(streamed.mask().request_id(), 77u);
  auto decoded = DecodeWireMask(streamed.mask().mask());
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(MaskDiff(*decoded, FromCab(want->mask)), "");
  if (!HasFailure()) RemoveTree(dir);
}

// A client process killed mid-stream (no cancel, the connection just breaks) frees its session.
TEST_F(PythonClientTest, KilledClientFreesItsSession) {
  const std::string dir = MakeTempDir("python-kill");
  WriteInputs(PythonProblem(), dir);
  const int port = server_->metrics_port();
  auto closed = [&] {
    return ReadMetric(port, "cab_sessions_closed_total", {{"reason", "cancelled"}}).value_or(0) +
           ReadMetric(port, "cab_sessions_closed_total", {{"reason", "error"}}).value_or(0);
  };
  const double before = closed();
  auto py = StartPython(*server_, dir, {"--hang_stream"});
  ASSERT_TRUE(py.ok()) << py.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while ((*py)->Log().find("HANGING") == std::string::npos && (*py)->Running() && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_NE((*py)->Log().find("HANGING"), std::string::npos) << "python never got its chunk acked:\n" << (*py)->Log();
  WaitForMetric(port, "cab_active_sessions", {}, [](double v) { return v == 1; });
  (*py)->Signal(SIGKILL);
  (*py)->WaitExit(absl::Seconds(10));
  WaitForMetric(port, "cab_active_sessions", {}, [](double v) { return v == 0; });
  WaitForMetric(port, "cab_session_memory_bytes", {}, [](double v) { return v == 0; });
  EXPECT_EQ(closed(), before + 1) << "the broken stream's session was not counted as cancelled or error";
  ExpectServerHealthy();
  if (!HasFailure()) RemoveTree(dir);
}

}  // namespace
}  // namespace cab_it
