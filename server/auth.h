// Optional bearer-token authentication: clients send metadata `authorization: Bearer <token>`.
// Checked at the top of every cab.v1 handler (health and reflection stay open for probes).
// Messages never echo what the client sent.
#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cab::server {

class TokenAuth {
 public:
  // Disabled: every call passes.
  TokenAuth() = default;
  explicit TokenAuth(std::string token) : token_(std::move(token)) {}
  // Reads the token from `path` (surrounding whitespace trimmed); an empty file is an error.
  static absl::StatusOr<TokenAuth> FromFile(const std::string& path);

  bool enabled() const { return !token_.empty(); }
  // `authorization` is the metadata value, or null when the client sent none.
  absl::Status Check(const absl::string_view* authorization) const;

 private:
  std::string token_;
};

}  // namespace cab::server
