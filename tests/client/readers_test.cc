// .npy and .safetensors readers against files built byte by byte here (not with the writers),
// plus the writers' round trip and every malformed-input error.
#include <cstring>
#include <fstream>

#include "cab/tensor_file.h"
#include "gtest/gtest.h"
#include "server_launcher.h"

namespace cab {
namespace {

std::string Le16(uint16_t v) { return std::string{static_cast<char>(v & 0xff), static_cast<char>(v >> 8)}; }
std::string Le32(uint32_t v) { std::string s(4, 0); std::memcpy(s.data(), &v, 4); return s; }
std::string Le64(uint64_t v) { std::string s(8, 0); std::memcpy(s.data(), &v, 8); return s; }
std::string Floats(std::initializer_list<float> v) {
  std::string s;
  for (float f : v) { char b[4]; std::memcpy(b, &f, 4); s.append(b, 4); }
  return s;
}

// A .npy file as numpy.save writes it: version, header length, dict, padding, newline, data.
std::string Npy(int major, const std::string& dict, const std::string& data) {
  std::string header = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::string out = std::string("\x93NUMPY", 6) + static_cast<char>(major) + '\0';
  out += major == 1 ? Le16(static_cast<uint16_t>(header.size())) : Le32(static_cast<uint32_t>(header.size()));
  return out + header + data;
}

TEST(Npy, ReadsV1Float32) {
  auto t = ParseNpy(Npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", Floats({1, 2, 3, 4, 5, 6})));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dtype, DType::kF32);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t->view().at(4), 5.f);
}

TEST(Npy, ReadsV2Float16AndOneDimShape) {
  std::string data = Le16(FloatToHalf(1.5f)) + Le16(FloatToHalf(-2.f));
  auto t = ParseNpy(Npy(2, "{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }", data));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dtype, DType::kF16);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(t->view().at(0), 1.5f);
  EXPECT_EQ(t->view().at(1), -2.f);
}

TEST(Npy, Uint16IsBf16OnlyWhenAsked) {
  std::string file = Npy(1, "{'descr': '<u2', 'fortran_order': False, 'shape': (1, 1, 1, 2), }",
                         Le16(FloatToBF16(3.f)) + Le16(FloatToBF16(0.25f)));
  auto refused = ParseNpy(file);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("bf16"), std::string::npos);
  auto t = ParseNpy(file, NpyOptions{true});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dtype, DType::kBF16);
  EXPECT_EQ(t->view().at(0), 3.f);
  EXPECT_EQ(t->view().at(1), 0.25f);
}

TEST(Npy, RejectsMalformedFiles) {
  const std::string ok_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  struct Case { std::string file, needle; };
  for (const Case& c : {
           Case{"not a numpy file", "magic"},
           Case{Npy(4, ok_dict, Floats({1, 2})), "version"},
           Case{Npy(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", Floats({1, 2})), "descr"},
           Case{Npy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", Floats({1, 2, 3, 4})), "descr"},
           Case{Npy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", Floats({1, 2})), "fortran_order"},
           Case{Npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", Floats({1, 2})), "data"},
           Case{Npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (x,), }", Floats({1, 2})), "shape"},
           Case{Npy(1, "{'descr': '<f4', 'fortran_order': False, }", Floats({1, 2})), "shape"},
           Case{Npy(1, ok_dict, "").substr(0, 20), "header"},
       }) {
    auto t = ParseNpy(c.file);
    ASSERT_FALSE(t.ok()) << c.needle;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find(c.needle), std::string::npos) << t.status();
  }
}

TEST(Npy, WriterRoundTrips) {
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    OwnedTensor t;
    t.dtype = dt;
    t.shape = {1, 2, 3, 4};
    t.bytes.resize(24 * DTypeSize(dt));
    for (size_t i = 0; i < t.bytes.size(); ++i) t.bytes[i] = static_cast<char>(i * 7 + 1);
    auto back = ParseNpy(WriteNpy(t), NpyOptions{true});
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->dtype, dt);
    EXPECT_EQ(back->shape, t.shape);
    EXPECT_EQ(back->bytes, t.bytes);
  }
}

std::string Safetensors(const std::string& header, const std::string& data) {
  return Le64(header.size()) + header + data;
}

TEST(Safetensors, ReadsNamedTensorsOfEachDtype) {
  std::string data = Floats({1, 2, 3, 4}) + Le16(FloatToBF16(-1.f)) + Le16(FloatToHalf(0.5f));
  std::string header =
      R"({"__metadata__":{"format":"pt"},"q":{"dtype":"F32","shape":[1,1,2,2],"data_offsets":[0,16]},)"
      R"("k":{"dtype":"BF16","shape":[1],"data_offsets":[16,18]},"h":{"dtype":"F16","shape":[1],"data_offsets":[18,20]}})";
  auto all = ParseSafetensors(Safetensors(header, data));
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ(all->at("q").shape, (std::vector<int64_t>{1, 1, 2, 2}));
  EXPECT_EQ(all->at("q").view().at(3), 4.f);
  EXPECT_EQ(all->at("k").dtype, DType::kBF16);
  EXPECT_EQ(all->at("k").view().at(0), -1.f);
  EXPECT_EQ(all->at("h").view().at(0), 0.5f);
}

TEST(Safetensors, RejectsMalformedFiles) {
  std::string four = Floats({1, 2, 3, 4});
  struct Case { std::string file, needle; };
  for (const Case& c : {
           Case{"abc", "8-byte"},
           Case{Le64(1000) + "{}", "header size"},
           Case{Safetensors("{not json", four), "header"},
           Case{Safetensors(R"({"q":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", four + four), "dtype"},
           Case{Safetensors(R"({"q":{"dtype":"F32","shape":[4],"data_offsets":[0,32]}})", four), "data_offsets"},
           Case{Safetensors(R"({"q":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", four), "do not match"},
           Case{Safetensors(R"({"q":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", four), "shape"},
           Case{Safetensors(R"({"q":{"dtype":"F32","shape":[4]}})", four), "lacks"},
       }) {
    auto t = ParseSafetensors(c.file);
    ASSERT_FALSE(t.ok()) << c.needle;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(t.status().message().find(c.needle), std::string::npos) << t.status();
  }
}

TEST(Safetensors, WriterRoundTrips) {
  OwnedTensor a{DType::kF32, {2, 2}, Floats({1, 2, 3, 4})}, b{DType::kF16, {1}, Le16(FloatToHalf(2.f))};
  auto back = ParseSafetensors(WriteSafetensors({{"q", a}, {"k", b}}));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->at("q").bytes, a.bytes);
  EXPECT_EQ(back->at("k").bytes, b.bytes);
  EXPECT_EQ(back->at("k").dtype, DType::kF16);
}

TEST(LoadQk, ReadsSafetensorsAndNpyPairs) {
  const std::string dir = cab_client_test::MakeTempDir();
  OwnedTensor q{DType::kF32, {1, 1, 1, 2}, Floats({1, 2})}, k{DType::kF32, {1, 1, 1, 2}, Floats({3, 4})};
  std::ofstream(dir + "/qk.safetensors", std::ios::binary) << WriteSafetensors({{"q", q}, {"k", k}});
  std::ofstream(dir + "/q.npy", std::ios::binary) << WriteNpy(q);
  std::ofstream(dir + "/k.npy", std::ios::binary) << WriteNpy(k);
  for (const std::string& spec : {dir + "/qk.safetensors", dir + "/q.npy," + dir + "/k.npy"}) {
    auto qk = LoadQk(spec);
    ASSERT_TRUE(qk.ok()) << qk.status();
    EXPECT_EQ(qk->q.bytes, q.bytes);
    EXPECT_EQ(qk->k.bytes, k.bytes);
  }
  EXPECT_EQ(LoadQk(dir + "/q.npy").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadQk(dir + "/missing.safetensors").status().code(), absl::StatusCode::kNotFound);
  std::ofstream(dir + "/only_q.safetensors", std::ios::binary) << WriteSafetensors({{"q", q}});
  EXPECT_EQ(LoadQk(dir + "/only_q.safetensors").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cab
