// cab-client evict: KV-cache keep-indices for one eviction policy, on synthetic inputs (what the
// policy needs: scores, keys, an observation window) or on tensors from a file.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "cab/tensor_file.h"
#include "commands.h"
#include "common.h"
#include "synthetic.h"

namespace cab::cli {
namespace {

std::string Help() {
  return "usage: cab-client evict --server=HOST:PORT [flags]\n"
         "  --policy=h2o|streaming|cab|snapkv|random --keep=N/4\n"
         "  --seq_len=4096 --heads=8 --kv_heads=HEADS --head_dim=64 --batch=1 --window=32 --seed=1\n"
         "  --dtype=fp32|fp16|bf16   synthetic inputs: the policy's scores / keys / window\n"
         "  --input=FILE.safetensors  tensors named scores [B,H,N], keys [B,Hkv,N,D], window [B,Hq,W,D]\n"
         "  --sink_tokens --local_ratio --bridge_ratio --importance_ratio --block_size=64 --graph_degree=32\n"
         "  --curvature=balanced --snapkv_pool=7 --policy_seed=0 --print=8\n" +
         ClientFlagsHelp();
}

}  // namespace

int RunEvict(int argc, char** argv) {
  auto args = Args::Parse(argc, argv);
  if (!args.ok()) return UsageError(args.status(), Help());
  if (args->Has("help")) return std::printf("%s", Help().c_str()), kExitOk;
  auto options = ReadClientOptions(*args);
  const bool json = args->Has("json");
  auto policy = ParseEvictPolicy(args->String("policy", "cab"));
  auto curvature = ParseCurvature(args->String("curvature", "balanced"));
  auto dtype = ParseDType(args->String("dtype", "fp32"));
  auto seq_len = args->Int("seq_len", 4096), heads = args->Int("heads", 8), head_dim = args->Int("head_dim", 64),
       batch = args->Int("batch", 1), window = args->Int("window", 32), seed = args->Int("seed", 1),
       print = args->Int("print", 8);
  auto kv_heads = args->Int("kv_heads", heads.ok() ? *heads : 0);
  auto keep = args->Int("keep", seq_len.ok() ? *seq_len / 4 : 0);
  EvictParams p;
  auto sink = args->Int("sink_tokens", p.sink_tokens), bs = args->Int("block_size", p.block_size),
       degree = args->Int("graph_degree", p.graph.degree), pool = args->Int("snapkv_pool", p.snapkv_pool),
       pseed = args->Int("policy_seed", 0);
  auto local = args->Double("local_ratio", -1), bridge = args->Double("bridge_ratio", p.bridge_ratio),
       importance = args->Double("importance_ratio", p.importance_ratio);
  const std::string input = args->String("input", "");
  for (const absl::Status& s :
       {options.status(), policy.status(), curvature.status(), dtype.status(), seq_len.status(), heads.status(),
        head_dim.status(), batch.status(), window.status(), seed.status(), print.status(), kv_heads.status(),
        keep.status(), sink.status(), bs.status(), degree.status(), pool.status(), pseed.status(), local.status(),
        bridge.status(), importance.status(), args->Finish()})
    if (!s.ok()) return UsageError(s, Help());
  p.policy = *policy;
  p.keep = *keep;
  p.sink_tokens = static_cast<int>(*sink);
  p.block_size = static_cast<int>(*bs);
  p.graph.degree = static_cast<int>(*degree);
  p.graph.curvature = *curvature;
  p.snapkv_pool = static_cast<int>(*pool);
  p.seed = static_cast<uint64_t>(*pseed);
  if (*local >= 0) p.local_ratio = p.h2o_local_ratio = static_cast<float>(*local);
  p.bridge_ratio = static_cast<float>(*bridge);
  p.importance_ratio = static_cast<float>(*importance);

  std::map<std::string, OwnedTensor> tensors;
  EvictInputs in;
  if (!input.empty()) {
    auto bytes = ReadWholeFile(input);
    if (!bytes.ok()) return UsageError(bytes.status(), Help());
    auto parsed = ParseSafetensors(*bytes);
    if (!parsed.ok()) return UsageError(parsed.status(), Help());
    tensors = std::move(*parsed);
    for (const char* name : {"scores", "keys", "window"}) {
      if (!tensors.count(name)) continue;
      const auto& t = tensors[name];
      if (t.shape.size() < 3) return UsageError(absl::InvalidArgumentError(absl::StrCat(name, ": rank < 3")), Help());
      in.batch = static_cast<int>(t.shape[0]);
      if (std::string(name) != "window") in.tokens = t.shape[2];
      if (std::string(name) == "keys") in.kv_heads = static_cast<int>(t.shape[1]);
    }
    if (in.kv_heads == 0 && tensors.count("scores")) in.kv_heads = static_cast<int>(tensors["scores"].shape[1]);
  } else {
    in.batch = static_cast<int>(*batch);
    in.kv_heads = static_cast<int>(*kv_heads);
    in.tokens = *seq_len;
    const bool wants_keys = p.policy == EvictPolicy::kCab || p.policy == EvictPolicy::kSnapKV;
    if (p.policy == EvictPolicy::kH2O || p.policy == EvictPolicy::kCab) {
      // Accumulated attention is non-negative: |N(0,1)| per token.
      OwnedTensor s = RandomTensor({*batch, *kv_heads, *seq_len}, DType::kF32, *seed);
      float* v = reinterpret_cast<float*>(s.bytes.data());
      for (int64_t i = 0; i < *batch * *kv_heads * *seq_len; ++i) v[i] = std::abs(v[i]);
      tensors["scores"] = std::move(s);
    }
    if (wants_keys) tensors["keys"] = RandomTensor({*batch, *kv_heads, *seq_len, *head_dim}, *dtype, *seed + 1);
    if (p.policy == EvictPolicy::kSnapKV)
      tensors["window"] = RandomTensor({*batch, *heads, *window, *head_dim}, *dtype, *seed + 2);
  }
  TensorView scores, keys, win;
  if (tensors.count("scores")) in.scores = &(scores = tensors["scores"].view());
  if (tensors.count("keys")) in.keys = &(keys = tensors["keys"].view());
  if (tensors.count("window")) in.window = &(win = tensors["window"].view());

  auto client = Client::Create(*options);
  if (!client.ok()) return UsageError(client.status(), Help());
  auto reply = (*client)->Evict(in, p);
  if (!reply.ok()) return RpcError(reply.status());
  const KeepIndices& k = reply->keep;
  std::vector<std::string> first;
  for (int64_t i = 0; i < std::min<int64_t>(*print, k.per_head); ++i) first.push_back(absl::StrCat(k.Row(0, 0)[i]));
  if (json) {
    JsonObject out;
    out.Add("command", "evict").Add("policy", Name(p.policy)).Add("tokens", in.tokens).Add("batch", k.batch)
        .Add("kv_heads", k.kv_heads).Add("keep", p.keep).Add("per_head", k.per_head)
        .AddRaw("first_indices", JsonArray(first)).AddRaw("timings", TimingsJson(reply->timings));
    std::printf("%s\n", out.str().c_str());
  } else {
    std::printf("policy %s  tokens %ld  batch %d  kv_heads %d  keep %ld per head  server %.3f ms\n",
                Name(p.policy).c_str(), in.tokens, k.batch, k.kv_heads, k.per_head,
                reply->timings.total_seconds() * 1e3);
    std::string line;
    for (const auto& s : first) absl::StrAppend(&line, " ", s);
    std::printf("head (0,0) keeps:%s%s\n", line.c_str(), k.per_head > *print ? " ..." : "");
  }
  return kExitOk;
}

}  // namespace cab::cli
