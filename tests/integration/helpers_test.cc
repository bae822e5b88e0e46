// The integration suite's own helpers, checked without a server: the naive representatives agree
// with the CPU backend's coarsening, the independent mask decoder agrees with cab_wire's encoder in
// every format, and the text parsers read what they should.
#include "gtest/gtest.h"
#include "mask_decode.h"
#include "metrics_text.h"
#include "problem.h"
#include "rpc_helpers.h"
#include "server_process.h"
#include "wire/mask_codec.h"

namespace cab_it {
namespace {

TEST(HelpersTest, NaiveRepresentativesEqualTheBackendsCoarsening) {
  ProblemShape shape;
  shape.tokens = 333;
  const Problem pb = MakeProblem(shape);
  auto c = CpuReference().Coarsen(cab::TensorView{pb.k.values.data(), cab::DType::kF32, pb.k.shape}, shape.block_size);
  ASSERT_TRUE(c.ok()) << c.status();
  const NaiveReps n = NaiveRepresentatives(pb.k, shape.block_size);
  EXPECT_EQ(c->blocks, shape.blocks());
  EXPECT_EQ(c->maxl2, n.maxl2.values);
  EXPECT_EQ(c->kmin, n.kmin.values);
  EXPECT_EQ(c->kmax, n.kmax.values);
}

TEST(HelpersTest, DecoderAgreesWithCabWireInEveryFormat) {
  const Problem pb = MakeProblem(ProblemShape{});
  TestMaskParams p;
  auto ref = ReferenceMask(pb, p);
  ASSERT_TRUE(ref.ok()) << ref.status();
  const DenseMask want = FromCab(ref->mask);
  EXPECT_GT(want.kept(), 0);
  for (cab::v1::MaskFormat f : AllMaskFormats()) {
    cab::v1::BlockMask wire;
    ASSERT_TRUE(cab::wire::EncodeMask(ref->mask, f, true, &wire).ok());
    auto got = DecodeWireMask(wire);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(MaskDiff(*got, want), "") << cab::v1::MaskFormat_Name(f);
  }
  // A broken mask is refused with the invariant named.
  cab::v1::BlockMask wire;
  ASSERT_TRUE(cab::wire::EncodeMask(ref->mask, cab::v1::MASK_FORMAT_BSR, true, &wire).ok());
  wire.mutable_col_indices()->mutable_data()->resize(3);
  EXPECT_FALSE(DecodeWireMask(wire).ok());
}

TEST(HelpersTest, MetricValueReadsLabelledSamples) {
  const std::string text =
      "# HELP cab_requests_total Requests.\n"
      "# TYPE cab_requests_total counter\n"
      "cab_requests_total{method=\"Predict\",code=\"OK\"} 3\n"
      "cab_requests_total{method=\"Predict\",code=\"INVALID_ARGUMENT\"} 2\n"
      "cab_requests_total{method=\"Info\",code=\"OK\"} 1\n"
      "cab_requests_total_other 100\n"
      "cab_active_sessions 0\n";
  EXPECT_EQ(MetricValue(text, "cab_requests_total", {{"method", "Predict"}, {"code", "OK"}}), 3.0);
  EXPECT_EQ(MetricValue(text, "cab_requests_total", {{"method", "Predict"}}), 5.0);
  EXPECT_EQ(MetricValue(text, "cab_requests_total"), 6.0);
  EXPECT_EQ(MetricValue(text, "cab_active_sessions"), 0.0);
  EXPECT_FALSE(MetricValue(text, "cab_requests_total", {{"method", "Evict"}}).has_value());
  EXPECT_FALSE(MetricValue(text, "cab_missing").has_value());
}

TEST(HelpersTest, PortFileAndFieldNames) {
  auto ports = ParsePortFile("grpc=4711 metrics=4712\n");
  ASSERT_TRUE(ports.ok());
  EXPECT_EQ(ports->first, 4711);
  EXPECT_EQ(ports->second, 4712);
  EXPECT_FALSE(ParsePortFile("metrics=1").ok());
  EXPECT_TRUE(NamesField("k: 12 bytes for shape [1,2]", "k"));
  EXPECT_TRUE(NamesField("chunk.q.data has 10 bytes", "q"));
  EXPECT_TRUE(NamesField("params.sparsity: 2 is outside [0, 1)", "sparsity"));
  EXPECT_FALSE(NamesField("block_size: 8", "k"));
  EXPECT_FALSE(NamesField("bad request", "q"));
}

}  // namespace
}  // namespace cab_it
