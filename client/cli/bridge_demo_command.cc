// cab-client bridge-demo: the prototype's bridge experiment through the server. For each policy
// and sparsity it asks for the mask of the synthetic two-cluster input (bridge_data.h) and
// reports whether the bridge block survives in the row that reaches it.
#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bridge_data.h"
#include "commands.h"
#include "common.h"

namespace cab::cli {
namespace {

std::string Help() {
  return "usage: cab-client bridge-demo --server=HOST:PORT [--json]\n"
         "  --policies=cab,magnitude,random,streaming,quest --sparsities=0.5,0.9,0.95,0.99\n"
         "  --blocks=256 --block_size=16 --head_dim=64 --bridge_rank=16 --graph_degree=32 --seed=7\n" +
         ClientFlagsHelp();
}

}  // namespace

int RunBridgeDemo(int argc, char** argv) {
  auto args = Args::Parse(argc, argv);
  if (!args.ok()) return UsageError(args.status(), Help());
  if (args->Has("help")) return std::printf("%s", Help().c_str()), kExitOk;
  auto options = ReadClientOptions(*args);
  const bool json = args->Has("json");
  std::vector<std::string> policy_names =
      absl::StrSplit(args->String("policies", "cab,magnitude,random,streaming,quest"), ',');
  auto sparsities = args->DoubleList("sparsities", {0.5, 0.9, 0.95, 0.99});
  auto blocks = args->Int("blocks", 256), block = args->Int("block_size", 16), dim = args->Int("head_dim", 64),
       rank = args->Int("bridge_rank", 16), degree = args->Int("graph_degree", 32), seed = args->Int("seed", 7);
  for (const absl::Status& s : {options.status(), sparsities.status(), blocks.status(), block.status(), dim.status(),
                                rank.status(), degree.status(), seed.status(), args->Finish()})
    if (!s.ok()) return UsageError(s, Help());
  if (*blocks < 8 || *dim < 4 || *block < 1)
    return UsageError(absl::InvalidArgumentError("--blocks >= 8, --head_dim >= 4"), Help());
  std::vector<MaskPolicy> policies;
  for (const auto& n : policy_names) {
    auto p = ParseMaskPolicy(n);
    if (!p.ok()) return UsageError(p.status(), Help());
    policies.push_back(*p);
  }

  BridgeData data = MakeBridgeData(static_cast<int>(*blocks), static_cast<int>(*block), static_cast<int>(*dim),
                                   static_cast<int>(*rank), static_cast<uint64_t>(*seed));
  auto client = Client::Create(*options);
  if (!client.ok()) return UsageError(client.status(), Help());

  std::vector<std::string> rows_json;
  if (!json) {
    std::printf("bridge block %d, reached only by query block %d (rank %ld of its scores); %d blocks of %ld\n",
                data.bridge_block, data.query_block, *rank, data.blocks, *block);
    std::printf("%-10s", "policy");
    for (double s : *sparsities) std::printf("  %8.2f", s);
    std::printf("\n");
  }
  for (MaskPolicy policy : policies) {
    if (!json) std::printf("%-10s", Name(policy).c_str());
    std::vector<std::string> cells;
    for (double sparsity : *sparsities) {
      PredictInput in;
      in.block_size = static_cast<int>(*block);
      in.params.policy = policy;
      in.params.sparsity = static_cast<float>(sparsity);
      in.params.graph.degree = static_cast<int>(*degree);
      in.params.row_begin = data.query_block;
      in.params.row_end = data.query_block + 1;
      in.q = data.q.view();
      in.k = data.k.view();
      auto reply = (*client)->Predict(in);
      if (!reply.ok()) return RpcError(reply.status());
      const BlockMask& m = reply->mask;
      const int32_t* begin = m.col_indices.data() + m.row_offsets[0];
      const int32_t* end = m.col_indices.data() + m.row_offsets[1];
      const bool kept = std::binary_search(begin, end, data.bridge_block);
      if (!json) std::printf("  %8s", kept ? "kept" : "dropped");
      cells.push_back(JsonObject().Add("sparsity", sparsity).Add("bridge_kept", kept)
                          .Add("row_kept_blocks", static_cast<int64_t>(end - begin)).str());
    }
    if (!json) std::printf("\n");
    rows_json.push_back(JsonObject().Add("policy", Name(policy)).AddRaw("results", JsonArray(cells)).str());
  }
  if (json) {
    JsonObject out;
    out.Add("command", "bridge-demo").Add("blocks", data.blocks).Add("block_size", *block).Add("head_dim", *dim)
        .Add("bridge_block", data.bridge_block).Add("query_block", data.query_block).Add("bridge_rank", *rank)
        .Add("graph_degree", *degree).AddRaw("policies", JsonArray(rows_json));
    std::printf("%s\n", out.str().c_str());
  }
  return kExitOk;
}

}  // namespace cab::cli
