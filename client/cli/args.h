// Command-line flags of one subcommand: `--name=value` or a bare `--name` (= "true"). Every flag
// a subcommand reads is looked up through Args; Finish() then reports the ones nobody read, so a
// misspelt flag is a usage error (exit 2) instead of being ignored.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cab::cli {

class Args {
 public:
  // argv[0] is the subcommand name; positional arguments are an error.
  static absl::StatusOr<Args> Parse(int argc, char** argv);

  bool Has(const std::string& name);
  std::string String(const std::string& name, const std::string& fallback);
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t fallback);
  absl::StatusOr<double> Double(const std::string& name, double fallback);
  absl::StatusOr<bool> Bool(const std::string& name, bool fallback);
  // A comma-separated list of numbers ("0.5,0.9").
  absl::StatusOr<std::vector<double>> DoubleList(const std::string& name, const std::vector<double>& fallback);
  absl::Status Finish() const;  // INVALID_ARGUMENT naming every unread flag

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> read_;
};

}  // namespace cab::cli
