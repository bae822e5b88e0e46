// What every subcommand shares: the connection flags, the mask-parameter flags, the exit codes
// and a small JSON writer for --json summaries.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "args.h"
#include "cab/client.h"

namespace cab::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitRpc = 1;
inline constexpr int kExitUsage = 2;

// --server, --tls, --ca_cert, --client_cert, --client_key, --server_name, --token, --token_file,
// --deadline_ms, --lb_policy, --keepalive_ms, --retries.
absl::StatusOr<ClientOptions> ReadClientOptions(Args& args);
std::string ClientFlagsHelp();

// --policy, --sparsity, --blocks_per_row, --estimator, --curvature, --query_coarsening,
// --graph_degree, --sink_blocks, --local_blocks, --min_keep, --local_ratio, --bridge_ratio,
// --importance_ratio, --lambda, --seed, --causal, --adaptive_tau, --adaptive_z.
absl::StatusOr<MaskParams> ReadMaskParams(Args& args);
std::string MaskFlagsHelp();

// Prints "error: <message>" and `help` to stderr; returns kExitUsage.
int UsageError(const absl::Status& status, const std::string& help);
// Prints "rpc error: CODE: message" to stderr; returns kExitRpc.
int RpcError(const absl::Status& status);

// A flat JSON object built field by field (values already JSON for AddRaw).
class JsonObject {
 public:
  JsonObject& Add(const std::string& key, const std::string& value);
  JsonObject& Add(const std::string& key, const char* value) { return Add(key, std::string(value)); }
  JsonObject& Add(const std::string& key, double value);
  JsonObject& Add(const std::string& key, int64_t value);
  JsonObject& Add(const std::string& key, int value) { return Add(key, static_cast<int64_t>(value)); }
  JsonObject& Add(const std::string& key, bool value);
  JsonObject& AddRaw(const std::string& key, const std::string& json);
  std::string str() const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};
std::string JsonQuote(const std::string& s);
std::string JsonArray(const std::vector<std::string>& raw_items);
std::string TimingsJson(const v1::Timings& t);

}  // namespace cab::cli
