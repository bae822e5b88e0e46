// cab-client info: the server's version, backend, devices, limits and supported policies.
#include <cstdio>

#include "absl/strings/str_join.h"
#include "commands.h"
#include "common.h"

namespace cab::cli {

int RunInfo(int argc, char** argv) {
  const std::string help = "usage: cab-client info --server=HOST:PORT [--json]\n" + ClientFlagsHelp();
  auto args = Args::Parse(argc, argv);
  if (!args.ok()) return UsageError(args.status(), help);
  if (args->Has("help")) return std::printf("%s", help.c_str()), kExitOk;
  auto options = ReadClientOptions(*args);
  const bool json = args->Has("json");
  if (!options.ok()) return UsageError(options.status(), help);
  if (auto s = args->Finish(); !s.ok()) return UsageError(s, help);
  auto client = Client::Create(*options);
  if (!client.ok()) return UsageError(client.status(), help);
  auto info = (*client)->Info();
  if (!info.ok()) return RpcError(info.status());
  const auto& l = info->limits();
  auto list = [](const auto& names) {
    std::vector<std::string> q;
    for (const auto& n : names) q.push_back(JsonQuote(n));
    return JsonArray(q);
  };
  if (json) {
    JsonObject limits;
    limits.Add("max_tokens", l.max_tokens()).Add("max_heads", l.max_heads()).Add("max_head_dim", l.max_head_dim())
        .Add("max_message_bytes", l.max_message_bytes()).Add("max_sessions", l.max_sessions())
        .Add("max_session_bytes", l.max_session_bytes()).Add("max_total_bytes", l.max_total_bytes())
        .Add("min_block_size", l.min_block_size()).Add("max_block_size", l.max_block_size());
    JsonObject out;
    out.Add("command", "info").Add("version", info->version()).Add("backend", info->backend())
        .AddRaw("devices", list(info->devices())).AddRaw("limits", limits.str())
        .AddRaw("mask_policies", list(info->mask_policies())).AddRaw("evict_policies", list(info->evict_policies()))
        .AddRaw("estimators", list(info->estimators())).AddRaw("curvatures", list(info->curvatures()))
        .AddRaw("formats", list(info->formats())).Add("auth_required", info->auth_required());
    std::printf("%s\n", out.str().c_str());
    return kExitOk;
  }
  std::printf("version        %s\nbackend        %s\ndevices        %s\n", info->version().c_str(),
              info->backend().c_str(), absl::StrJoin(info->devices(), ", ").c_str());
  std::printf("limits         max_tokens %ld, max_heads %d, max_head_dim %d, max_message_bytes %ld,\n"
              "               max_sessions %d, max_session_bytes %ld, max_total_bytes %ld, block %d..%d\n",
              l.max_tokens(), l.max_heads(), l.max_head_dim(), l.max_message_bytes(), l.max_sessions(),
              l.max_session_bytes(), l.max_total_bytes(), l.min_block_size(), l.max_block_size());
  std::printf("mask policies  %s\nevict policies %s\nestimators     %s\ncurvatures     %s\nformats        %s\n"
              "auth required  %s\n",
              absl::StrJoin(info->mask_policies(), ", ").c_str(), absl::StrJoin(info->evict_policies(), ", ").c_str(),
              absl::StrJoin(info->estimators(), ", ").c_str(), absl::StrJoin(info->curvatures(), ", ").c_str(),
              absl::StrJoin(info->formats(), ", ").c_str(), info->auth_required() ? "yes" : "no");
  return kExitOk;
}

}  // namespace cab::cli
