#include "auth.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace cab::server {
namespace {

// Compares without an early exit, so the time taken does not tell how many leading bytes matched.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % (b.empty() ? 1 : b.size())]);
  return diff == 0 && !b.empty();
}

}  // namespace

absl::StatusOr<TokenAuth> TokenAuth::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError("--auth_token_file: cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string token(absl::StripAsciiWhitespace(ss.str()));
  if (token.empty()) return absl::InvalidArgumentError("--auth_token_file: " + path + " is empty");
  return TokenAuth(std::move(token));
}

absl::Status TokenAuth::Check(const absl::string_view* authorization) const {
  if (!enabled()) return absl::OkStatus();
  if (authorization == nullptr) {
    return absl::UnauthenticatedError("authorization: missing metadata (send 'authorization: Bearer <token>')");
  }
  constexpr absl::string_view kScheme = "Bearer ";
  if (!absl::StartsWithIgnoreCase(*authorization, kScheme)) {
    return absl::UnauthenticatedError("authorization: expected the 'Bearer <token>' scheme");
  }
  if (!ConstantTimeEquals(authorization->substr(kScheme.size()), token_)) {
    return absl::UnauthenticatedError("authorization: bearer token rejected");
  }
  return absl::OkStatus();
}

}  // namespace cab::server
