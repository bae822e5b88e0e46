// TLS, mutual TLS and bearer-token auth against a real cab-server. The keys and certificates are
// made at test time (make_test_certs.sh) in the build tree.
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "rpc_helpers.h"

namespace cab_it {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Makes the certificates once per test process.
const std::string& CertDir() {
  static const std::string dir = [] {
    const std::string d = MakeTempDir("certs");
    const std::string cmd = absl::StrCat("OPENSSL=", CAB_IT_OPENSSL, " bash ", CAB_IT_SOURCE_DIR,
                                         "/make_test_certs.sh ", d);
    if (std::system(cmd.c_str()) != 0) return std::string();
    return d;
  }();
  return dir;
}

grpc::Status CallInfo(const std::shared_ptr<grpc::Channel>& channel, const std::string& token = "",
                      cab::v1::InfoResponse* out = nullptr) {
  auto stub = cab::v1::MaskPredictor::NewStub(channel);
  auto ctx = Context(absl::Seconds(10));
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
  cab::v1::InfoResponse info;
  const grpc::Status s = stub->Info(ctx.get(), cab::v1::InfoRequest(), &info);
  if (out) *out = info;
  return s;
}

std::shared_ptr<grpc::Channel> TlsChannel(const std::string& address, const std::string& ca,
                                          const std::string& client = "") {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = Slurp(CertDir() + "/" + ca + ".crt");
  if (!client.empty()) {
    o.pem_private_key = Slurp(CertDir() + "/" + client + ".key");
    o.pem_cert_chain = Slurp(CertDir() + "/" + client + ".crt");
  }
  return grpc::CreateChannel(address, grpc::SslCredentials(o));
}

class TlsTest : public ServerTest {
 protected:
  void SetUp() override {
    ASSERT_FALSE(CertDir().empty()) << "make_test_certs.sh failed";
    ServerTest::SetUp();
  }
  ServerOptions Options() override {
    ServerOptions o;
    o.flags = {"--tls_cert=" + CertDir() + "/server.crt", "--tls_key=" + CertDir() + "/server.key"};
    return o;
  }
};

TEST_F(TlsTest, RightCaSucceedsWrongCaFailsPlaintextFails) {
  EXPECT_TRUE(CallInfo(TlsChannel(server_->address(), "ca")).ok());
  const grpc::Status wrong = CallInfo(TlsChannel(server_->address(), "other_ca"));
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAVAILABLE) << "handshake with a wrong CA: " << Describe(wrong);
  const grpc::Status plain = CallInfo(InsecureChannel(server_->address()));
  EXPECT_FALSE(plain.ok()) << "a plaintext client reached a TLS server";
  EXPECT_TRUE(CallInfo(TlsChannel(server_->address(), "ca")).ok()) << "the server stopped serving after bad handshakes";
}

class MutualTlsTest : public TlsTest {
 protected:
  ServerOptions Options() override {
    ServerOptions o = TlsTest::Options();
    o.flags.push_back("--tls_client_ca=" + CertDir() + "/ca.crt");
    return o;
  }
};

TEST_F(MutualTlsTest, ClientCertificateRequired) {
  EXPECT_TRUE(CallInfo(TlsChannel(server_->address(), "ca", "client")).ok());
  const grpc::Status no_cert = CallInfo(TlsChannel(server_->address(), "ca"));
  EXPECT_FALSE(no_cert.ok()) << "mutual TLS accepted a client without a certificate";
  // A client certificate from another CA is refused too (other_ca's own cert is self-signed, not a client
  // of ca).
  const grpc::Status wrong_cert = CallInfo(TlsChannel(server_->address(), "ca", "other_ca"));
  EXPECT_FALSE(wrong_cert.ok()) << "mutual TLS accepted a certificate the client CA did not sign";
}

class TokenTest : public ServerTest {
 protected:
  void SetUp() override {
    ASSERT_FALSE(CertDir().empty()) << "make_test_certs.sh failed";
    token_ = std::string(absl::StripAsciiWhitespace(Slurp(CertDir() + "/token")));
    ServerTest::SetUp();
  }
  ServerOptions Options() override {
    ServerOptions o;
    o.flags = {"--auth_token_file=" + CertDir() + "/token"};
    return o;
  }
  std::string token_;
};

TEST_F(TokenTest, NoTokenIsUnauthenticatedRightTokenSucceeds) {
  auto channel = InsecureChannel(server_->address());
  EXPECT_EQ(CallInfo(channel).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(CallInfo(channel, "wrong-token").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(CallInfo(channel, token_ + "x").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  cab::v1::InfoResponse info;
  const grpc::Status ok = CallInfo(channel, token_, &info);
  ASSERT_TRUE(ok.ok()) << Describe(ok);
  EXPECT_TRUE(info.auth_required());

  // Streams need the token too.
  auto stub = cab::v1::MaskPredictor::NewStub(channel);
  auto ctx = Context(absl::Seconds(10));
  auto rw = stub->Stream(ctx.get());
  cab::v1::StreamRequest req;
  req.mutable_config()->set_layers(1);
  rw->Write(req);
  cab::v1::StreamResponse resp;
  while (rw->Read(&resp)) {
  }
  EXPECT_EQ(rw->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace cab_it
