// cab-client attention: the end-to-end check that a mask is worth using. Asks the server for a
// block mask (predict's flags) and for decode keep-indices (Evict), runs block-sparse and dense
// attention on the same Q/K/V through the attention backends (cab/attention/backend.h: CUDA when a
// GPU is there and takes the problem, else the CPU reference), and reports the
// output's relative error, the attention recall (share of the dense softmax mass on what was
// kept), the density and the speedup of sparse over dense, for prefill and for decode.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

#include "absl/strings/str_cat.h"
#include "cab/attention/attention.h"
#include "cab/tensor_file.h"
#include "commands.h"
#include "common.h"
#include "synthetic.h"

namespace cab::cli {
namespace {

std::string Help() {
  return "usage: cab-client attention --server=HOST:PORT [flags]\n"
         "input:\n"
         "  --seq_len=2048 --heads=8 --kv_heads=HEADS --head_dim=64 --batch=1 --block_size=64\n"
         "  --dtype=bf16|fp16|fp32 --seed=1      synthetic Gaussian Q/K/V\n"
         "  --input=FILE.safetensors             tensors q [B,Hq,N,D], k and v [B,Hkv,N,D] (v optional: random)\n"
         "  --representatives --format=bsr|bitmap|flex   as in predict\n"
         "attention:\n"
         "  --device=auto|cpu|cuda   the attention backend (auto: cuda if a GPU is there and takes the\n"
         "                           problem: fp16/bf16, head_dim 64/128, block 64/128; else cpu)\n"
         "  --evict_policy=cab|h2o|streaming|snapkv|random --keep=N/10 --decode_queries=1 --window=32\n"
         "  --no_decode              skip the decode half\n" +
         MaskFlagsHelp() + ClientFlagsHelp();
}

OwnedTensor Slice(const OwnedTensor& t, int64_t start, int64_t len) {  // tokens [start, start + len)
  OwnedTensor s;
  s.dtype = t.dtype;
  s.shape = {t.shape[0], t.shape[1], len, t.shape[3]};
  const size_t row = t.shape[3] * DTypeSize(t.dtype);
  for (int64_t bh = 0; bh < t.shape[0] * t.shape[1]; ++bh) s.bytes.append(t.bytes.data() + (bh * t.shape[2] + start) * row, len * row);
  return s;
}

// Accumulated attention of the last `window` queries per kv head ([B, Hkv, N] fp32): what an
// inference engine would hand to h2o-style eviction.
OwnedTensor WindowScores(const OwnedTensor& q, const OwnedTensor& k, int64_t window) {
  const int64_t B = q.shape[0], Hq = q.shape[1], N = q.shape[2], D = q.shape[3], Hkv = k.shape[1];
  std::vector<float> qf(q.view().numel()), kf(k.view().numel());
  ToFloat(q.view(), 0, q.view().numel(), qf.data());
  ToFloat(k.view(), 0, k.view().numel(), kf.data());
  std::vector<float> scores(B * Hkv * N, 0.f), p(N);
  const double scale = 1.0 / std::sqrt(double(D));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = h / (Hq / Hkv);
      for (int64_t t = std::max<int64_t>(0, N - window); t < N; ++t) {
        const float* qt = qf.data() + ((b * Hq + h) * N + t) * D;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t u = 0; u <= t; ++u) {
          float dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qt[d] * kf[((b * Hkv + hk) * N + u) * D + d];
          p[u] = static_cast<float>(dot * scale);
          mx = std::max(mx, p[u]);
        }
        double sum = 0;
        for (int64_t u = 0; u <= t; ++u) sum += (p[u] = std::exp(p[u] - mx));
        for (int64_t u = 0; u <= t; ++u) scores[(b * Hkv + hk) * N + u] += static_cast<float>(p[u] / sum);
      }
    }
  return FromFloats({B, Hkv, N}, DType::kF32, scores);
}

struct Comparison {
  double rel_error = 0, recall = 0, sparse_ms = 0, dense_ms = 0;
  std::string device;
};

// Runs `fn` once more when it ran on a GPU: the first call pays for module load and set-up.
template <typename Fn>
absl::StatusOr<attention::AttentionResult> Warm(Fn fn) {
  auto r = fn();
  if (r.ok() && r->device != "cpu") r = fn();
  return r;
}

}  // namespace

int RunAttention(int argc, char** argv) {
  auto args = Args::Parse(argc, argv);
  if (!args.ok()) return UsageError(args.status(), Help());
  if (args->Has("help")) return std::printf("%s", Help().c_str()), kExitOk;
  auto options = ReadClientOptions(*args);
  auto params = ReadMaskParams(*args);
  const bool json = args->Has("json");
  auto seq_len = args->Int("seq_len", 2048), heads = args->Int("heads", 8), head_dim = args->Int("head_dim", 64),
       batch = args->Int("batch", 1), block = args->Int("block_size", 64), seed = args->Int("seed", 1),
       queries = args->Int("decode_queries", 1), window = args->Int("window", 32);
  auto kv_heads = args->Int("kv_heads", heads.ok() ? *heads : 0);
  auto keep = args->Int("keep", -1);
  auto dtype = ParseDType(args->String("dtype", "bf16"));
  auto format = ParseMaskFormat(args->String("format", "bsr"));
  auto device = attention::ParseDevice(args->String("device", "auto"));
  auto evict_policy = ParseEvictPolicy(args->String("evict_policy", "cab"));
  auto reps = args->Bool("representatives", false);
  auto no_decode = args->Bool("no_decode", false);
  const std::string input = args->String("input", "");
  for (const absl::Status& s :
       {options.status(), params.status(), seq_len.status(), heads.status(), head_dim.status(), batch.status(),
        block.status(), seed.status(), queries.status(), window.status(), kv_heads.status(), keep.status(),
        dtype.status(), format.status(), device.status(), evict_policy.status(), reps.status(), no_decode.status(),
        args->Finish()})
    if (!s.ok()) return UsageError(s, Help());

  OwnedTensor q, k, v;
  if (!input.empty()) {
    auto bytes = ReadWholeFile(input);
    if (!bytes.ok()) return UsageError(bytes.status(), Help());
    auto parsed = ParseSafetensors(*bytes);
    if (!parsed.ok()) return UsageError(parsed.status(), Help());
    if (!parsed->count("q") || !parsed->count("k"))
      return UsageError(absl::InvalidArgumentError("--input: needs tensors named q and k (and optionally v)"), Help());
    q = (*parsed)["q"];
    k = (*parsed)["k"];
    v = parsed->count("v") ? (*parsed)["v"] : RandomTensor(k.shape, k.dtype, *seed + 2);
  } else {
    if (*seq_len <= 0 || *heads <= 0 || *kv_heads <= 0 || *head_dim <= 0 || *batch <= 0)
      return UsageError(absl::InvalidArgumentError("--seq_len, --heads, --kv_heads, --head_dim, --batch must be > 0"), Help());
    q = RandomTensor({*batch, *heads, *seq_len, *head_dim}, *dtype, *seed);
    k = RandomTensor({*batch, *kv_heads, *seq_len, *head_dim}, *dtype, *seed + 1);
    v = RandomTensor({*batch, *kv_heads, *seq_len, *head_dim}, *dtype, *seed + 2);
  }
  if (q.shape.size() != 4 || k.shape.size() != 4 || v.shape != k.shape)
    return UsageError(absl::InvalidArgumentError("input: q [B,Hq,N,D], k and v [B,Hkv,N,D] (v shaped like k)"), Help());
  const int64_t N = q.shape[2];
  if (*queries <= 0 || *queries > N) return UsageError(absl::InvalidArgumentError("--decode_queries: in [1, N]"), Help());
  const int64_t keep_n = *keep > 0 ? std::min(*keep, N) : std::max<int64_t>(1, N / 10);

  auto client = Client::Create(*options);
  if (!client.ok()) return UsageError(client.status(), Help());
  PredictInput in;
  in.block_size = static_cast<int>(*block);
  in.params = *params;
  in.format = *format;
  in.q = q.view();
  in.k = k.view();
  in.representatives = *reps;
  auto reply = (*client)->Predict(in);
  if (!reply.ok()) return RpcError(reply.status());

  // Prefill: the server's mask against every causal block kept, through the same kernels.
  attention::PrefillOptions popt;
  popt.block_size = static_cast<int>(*block);
  popt.causal = params->graph.causal;
  popt.device = *device;
  const BlockMask& mask = reply->mask;
  const BlockMask dense = attention::DenseMask(mask.batch, mask.heads, mask.cols, popt.causal);
  auto sparse_out = Warm([&] { return attention::BlockSparsePrefill(q.view(), k.view(), v.view(), mask, popt); });
  if (!sparse_out.ok()) return UsageError(sparse_out.status(), Help());
  auto dense_out = Warm([&] { return attention::BlockSparsePrefill(q.view(), k.view(), v.view(), dense, popt); });
  if (!dense_out.ok()) return UsageError(dense_out.status(), Help());
  Comparison pre;
  pre.device = sparse_out->device;
  pre.sparse_ms = sparse_out->kernel_ms;
  pre.dense_ms = dense_out->kernel_ms;
  auto err = attention::RelativeError(sparse_out->out, dense_out->out);
  auto recall = attention::AttentionRecall(q.view(), k.view(), mask, popt);
  if (!err.ok() || !recall.ok()) return UsageError(err.ok() ? recall.status() : err.status(), Help());
  pre.rel_error = *err;
  pre.recall = *recall;

  // Decode: the last T queries over the cache restricted to the server's keep-indices.
  Comparison dec;
  int64_t per_head = 0;
  if (!*no_decode) {
    EvictParams ep;
    ep.policy = *evict_policy;
    ep.keep = keep_n;
    ep.block_size = static_cast<int>(*block);
    EvictInputs ein;
    ein.tokens = N;
    ein.batch = static_cast<int>(k.shape[0]);
    ein.kv_heads = static_cast<int>(k.shape[1]);
    const OwnedTensor scores = WindowScores(q, k, *window);
    const OwnedTensor win = Slice(q, N - std::min<int64_t>(*window, N), std::min<int64_t>(*window, N));
    TensorView sv = scores.view(), kv = k.view(), wv = win.view();
    ein.scores = &sv;
    ein.keys = &kv;
    ein.window = &wv;
    auto evicted = (*client)->Evict(ein, ep);
    if (!evicted.ok()) return RpcError(evicted.status());
    per_head = evicted->keep.per_head;
    const OwnedTensor qd = Slice(q, N - *queries, *queries);
    attention::DecodeOptions dopt;
    dopt.device = *device;
    auto sparse_d = Warm([&] { return attention::SparseDecode(qd.view(), k.view(), v.view(), &evicted->keep, dopt); });
    if (!sparse_d.ok()) return UsageError(sparse_d.status(), Help());
    auto dense_d = Warm([&] { return attention::SparseDecode(qd.view(), k.view(), v.view(), nullptr, dopt); });
    if (!dense_d.ok()) return UsageError(dense_d.status(), Help());
    auto derr = attention::RelativeError(sparse_d->out, dense_d->out);
    auto drecall = attention::DecodeRecall(qd.view(), k.view(), &evicted->keep, dopt);
    if (!derr.ok() || !drecall.ok()) return UsageError(derr.ok() ? drecall.status() : derr.status(), Help());
    dec.device = sparse_d->device;
    dec.sparse_ms = sparse_d->kernel_ms;
    dec.dense_ms = dense_d->kernel_ms;
    dec.rel_error = *derr;
    dec.recall = *drecall;
  }

  auto speedup = [](const Comparison& c) { return c.sparse_ms > 0 ? c.dense_ms / c.sparse_ms : 0.0; };
  if (json) {
    JsonObject p, d, out;
    p.Add("device", pre.device).Add("density", reply->density).Add("kept_blocks", mask.kept())
        .Add("rel_error", pre.rel_error).Add("recall", pre.recall).Add("sparse_ms", pre.sparse_ms)
        .Add("dense_ms", pre.dense_ms).Add("speedup", speedup(pre));
    out.Add("command", "attention").Add("policy", Name(params->policy)).Add("dtype", DTypeName(q.dtype))
        .Add("seq_len", N).Add("block_size", *block).AddRaw("prefill", p.str());
    if (!*no_decode) {
      d.Add("device", dec.device).Add("policy", Name(*evict_policy)).Add("keep", per_head)
          .Add("density", double(per_head) / double(N)).Add("rel_error", dec.rel_error).Add("recall", dec.recall)
          .Add("sparse_ms", dec.sparse_ms).Add("dense_ms", dec.dense_ms).Add("speedup", speedup(dec));
      out.AddRaw("decode", d.str());
    }
    std::printf("%s\n", out.str().c_str());
  } else {
    std::printf("q[%ld,%ld,%ld,%ld] k/v[%ld,%ld,%ld,%ld] %s  block %ld  mask policy %s\n", q.shape[0], q.shape[1],
                q.shape[2], q.shape[3], k.shape[0], k.shape[1], k.shape[2], k.shape[3], DTypeName(q.dtype).c_str(), *block,
                Name(params->policy).c_str());
    std::printf("prefill (%s): density %.4f  rel. error %.3e  recall %.4f  sparse %.3f ms  dense %.3f ms  speedup %.2fx\n",
                pre.device.c_str(), reply->density, pre.rel_error, pre.recall, pre.sparse_ms, pre.dense_ms, speedup(pre));
    if (!*no_decode)
      std::printf("decode  (%s): %s keeps %ld of %ld tokens (%.4f)  rel. error %.3e  recall %.4f  sparse %.3f ms  "
                  "dense %.3f ms  speedup %.2fx\n",
                  dec.device.c_str(), Name(*evict_policy).c_str(), per_head, N, double(per_head) / double(N), dec.rel_error,
                  dec.recall, dec.sparse_ms, dec.dense_ms, speedup(dec));
  }
  return kExitOk;
}

}  // namespace cab::cli
