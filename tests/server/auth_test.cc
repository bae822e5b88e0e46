// Bearer-token checks: UNAUTHENTICATED without or with a wrong token, never echoing it.
#include <cstdio>
#include <fstream>

#include "auth.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cab::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(TokenAuth, DisabledLetsEverythingThrough) {
  TokenAuth auth;
  EXPECT_FALSE(auth.enabled());
  EXPECT_TRUE(auth.Check(nullptr).ok());
}

TEST(TokenAuth, ChecksTheBearerToken) {
  TokenAuth auth("s3cret");
  EXPECT_EQ(auth.Check(nullptr).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(auth.Check(nullptr).message(), HasSubstr("authorization"));
  const absl::string_view good = "Bearer s3cret";
  EXPECT_TRUE(auth.Check(&good).ok());
  const absl::string_view lower = "bearer s3cret";
  EXPECT_TRUE(auth.Check(&lower).ok()) << "the scheme is case-insensitive (RFC 7235)";
  for (absl::string_view bad : {"Bearer s3cre", "Bearer s3cretX", "Bearer ", "Basic s3cret", "s3cret", ""}) {
    auto s = auth.Check(&bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated) << bad;
  }
  const absl::string_view wrong = "Bearer guess-me-123";
  EXPECT_THAT(auth.Check(&wrong).message(), Not(HasSubstr("guess-me-123")));
  EXPECT_THAT(auth.Check(&wrong).message(), Not(HasSubstr("s3cret")));
}

TEST(TokenAuth, FromFileTrimsAndRejectsEmpty) {
  const std::string path = ::testing::TempDir() + "/cab_token";
  std::ofstream(path) << "  tok-123\n";
  auto auth = TokenAuth::FromFile(path);
  ASSERT_TRUE(auth.ok()) << auth.status();
  const absl::string_view good = "Bearer tok-123";
  EXPECT_TRUE(auth->Check(&good).ok());
  std::ofstream(path, std::ios::trunc) << "\n";
  EXPECT_FALSE(TokenAuth::FromFile(path).ok());
  EXPECT_THAT(TokenAuth::FromFile(path + ".missing").status().message(), HasSubstr("--auth_token_file"));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace cab::server
