#include "common.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace cab::cli {

absl::StatusOr<ClientOptions> ReadClientOptions(Args& args) {
  ClientOptions o;
  o.target = args.String("server", "127.0.0.1:50051");
  o.tls.enabled = args.Has("tls") || args.Has("ca_cert") || args.Has("client_cert");
  o.tls.ca_cert_file = args.String("ca_cert", "");
  o.tls.client_cert_file = args.String("client_cert", "");
  o.tls.client_key_file = args.String("client_key", "");
  o.tls.target_name_override = args.String("server_name", "");
  if (auto tls = args.Bool("tls", o.tls.enabled); tls.ok()) o.tls.enabled = *tls; else return tls.status();
  o.bearer_token = args.String("token", "");
  std::string token_file = args.String("token_file", "");
  if (!token_file.empty()) {
    std::ifstream in(token_file);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("--token_file: cannot read '", token_file, "'"));
    std::stringstream ss;
    ss << in.rdbuf();
    o.bearer_token = std::string(absl::StripAsciiWhitespace(ss.str()));
  }
  auto deadline = args.Int("deadline_ms", 30000);
  if (!deadline.ok()) return deadline.status();
  if (*deadline <= 0) return absl::InvalidArgumentError("--deadline_ms: must be > 0");
  o.default_deadline = absl::Milliseconds(*deadline);
  o.load_balancing_policy = args.String("lb_policy", "round_robin");
  auto keepalive = args.Int("keepalive_ms", 0);
  if (!keepalive.ok()) return keepalive.status();
  o.keepalive_time_ms = static_cast<int>(*keepalive);
  auto attempts = args.Int("retries", 4);
  if (!attempts.ok()) return attempts.status();
  if (*attempts < 1 || *attempts > 5) return absl::InvalidArgumentError("--retries: attempts in [1, 5]");
  o.max_attempts = static_cast<int>(*attempts);
  return o;
}

std::string ClientFlagsHelp() {
  return "connection:\n"
         "  --server=HOST:PORT      target; also dns:///NAME:PORT or HOST:PORT,HOST:PORT (replicas)\n"
         "  --json                  machine-readable summary on stdout\n"
         "  --tls --ca_cert=PEM --client_cert=PEM --client_key=PEM --server_name=NAME\n"
         "  --token=T | --token_file=FILE   bearer token\n"
         "  --deadline_ms=30000 --lb_policy=round_robin|pick_first --keepalive_ms=0 --retries=4\n";
}

absl::StatusOr<MaskParams> ReadMaskParams(Args& args) {
  MaskParams p;
  auto policy = ParseMaskPolicy(args.String("policy", "cab"));
  if (!policy.ok()) return policy.status();
  p.policy = *policy;
  auto estimator = ParseEstimator(args.String("estimator", "max_l2"));
  if (!estimator.ok()) return estimator.status();
  p.graph.estimator = *estimator;
  auto curvature = ParseCurvature(args.String("curvature", "balanced"));
  if (!curvature.ok()) return curvature.status();
  p.graph.curvature = *curvature;
  auto qc = ParseCoarsening(args.String("query_coarsening", "max_l2"));
  if (!qc.ok()) return qc.status();
  p.query_coarsening = *qc;
  auto causal = args.Bool("causal", true);
  if (!causal.ok()) return causal.status();
  p.graph.causal = *causal;
  struct F { const char* name; float* out; };
  for (auto [name, out] : {F{"sparsity", &p.sparsity}, F{"local_ratio", &p.local_ratio},
                           F{"bridge_ratio", &p.bridge_ratio}, F{"importance_ratio", &p.importance_ratio},
                           F{"lambda", &p.graph.lambda}, F{"adaptive_tau", &p.adaptive_tau},
                           F{"adaptive_z", &p.adaptive_z}}) {
    auto v = args.Double(name, *out);
    if (!v.ok()) return v.status();
    *out = static_cast<float>(*v);
  }
  struct I { const char* name; int* out; };
  for (auto [name, out] : {I{"blocks_per_row", &p.blocks_per_row}, I{"graph_degree", &p.graph.degree},
                           I{"sink_blocks", &p.sink_blocks}, I{"local_blocks", &p.local_blocks},
                           I{"min_keep", &p.min_keep}}) {
    auto v = args.Int(name, *out);
    if (!v.ok()) return v.status();
    *out = static_cast<int>(*v);
  }
  auto seed = args.Int("policy_seed", 0);
  if (!seed.ok()) return seed.status();
  p.seed = static_cast<uint64_t>(*seed);
  if (auto s = p.Validate(); !s.ok()) return s;
  return p;
}

std::string MaskFlagsHelp() {
  return "mask parameters:\n"
         "  --policy=cab|magnitude|random|streaming|quest|dense|adaptive  --sparsity=0.95 | --blocks_per_row=K\n"
         "  --estimator=max_l2|mean|quest --curvature=balanced|forman|direct_redundancy\n"
         "  --query_coarsening=max_l2|mean --graph_degree=32 --causal=true --policy_seed=0\n"
         "  --sink_blocks=1 --local_blocks=1 --min_keep=1 --local_ratio --bridge_ratio --importance_ratio\n"
         "  --lambda=1 --adaptive_tau=0.9 --adaptive_z=1\n";
}

int UsageError(const absl::Status& status, const std::string& help) {
  std::fprintf(stderr, "error: %s\n\n%s", std::string(status.message()).c_str(), help.c_str());
  return kExitUsage;
}

int RpcError(const absl::Status& status) {
  std::fprintf(stderr, "rpc error: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return kExitRpc;
}

std::string JsonQuote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) out += absl::StrFormat("\\u%04x", c);
        else out += c;
    }
  }
  return out + "\"";
}

std::string JsonArray(const std::vector<std::string>& items) { return "[" + absl::StrJoin(items, ",") + "]"; }

JsonObject& JsonObject::Add(const std::string& key, const std::string& value) { return AddRaw(key, JsonQuote(value)); }
JsonObject& JsonObject::Add(const std::string& key, double value) {
  return AddRaw(key, std::isfinite(value) ? absl::StrFormat("%.9g", value) : std::string("null"));
}
JsonObject& JsonObject::Add(const std::string& key, int64_t value) { return AddRaw(key, absl::StrCat(value)); }
JsonObject& JsonObject::Add(const std::string& key, bool value) { return AddRaw(key, value ? "true" : "false"); }
JsonObject& JsonObject::AddRaw(const std::string& key, const std::string& json) {
  fields_.emplace_back(key, json);
  return *this;
}
std::string JsonObject::str() const {
  std::vector<std::string> parts;
  for (const auto& [k, v] : fields_) parts.push_back(JsonQuote(k) + ":" + v);
  return "{" + absl::StrJoin(parts, ",") + "}";
}

std::string TimingsJson(const v1::Timings& t) {
  return JsonObject()
      .Add("decode_seconds", t.decode_seconds())
      .Add("coarsen_seconds", t.coarsen_seconds())
      .Add("predict_seconds", t.predict_seconds())
      .Add("encode_seconds", t.encode_seconds())
      .Add("total_seconds", t.total_seconds())
      .str();
}

}  // namespace cab::cli
