// cab-client bench: K concurrent workers, each making --requests unary Predict calls or streamed
// sequences (open a session, append the sequence in --chunks pieces, ask for the mask, close);
// prints latency p50/p99, throughput, and where the time went: server kernels (coarsen + predict
// from the reply's Timings), the rest of the server's handling, and transport plus client work.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "commands.h"
#include "common.h"
#include "synthetic.h"

namespace cab::cli {
namespace {

std::string Help() {
  return "usage: cab-client bench --server=HOST:PORT [--json]\n"
         "  --mode=unary|stream --concurrency=1 --requests=20 (per worker) --warmup=2 --chunks=1\n"
         "  --seq_len=4096 --heads=8 --kv_heads=HEADS --head_dim=64 --block_size=64 --dtype=fp32\n"
         "  --representatives --format=bsr --seed=1\n"
         "  --precomputed   unary with --representatives: build the request (client-side coarsening\n"
         "                  included) once, before timing, and send that same request each time, as a\n"
         "                  model that already holds its representatives would; times the request alone\n" +
         MaskFlagsHelp() + ClientFlagsHelp();
}

struct Sample {
  double latency = 0, server_total = 0, kernel = 0, client_encode = 0;
  int64_t request_bytes = 0;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(std::ceil(p * v.size())) - 1;
  return v[std::min(i, v.size() - 1)];
}

OwnedTensor Slice(const OwnedTensor& t, int64_t start, int64_t len) {
  OwnedTensor s;
  s.dtype = t.dtype;
  s.shape = {t.shape[0], t.shape[1], len, t.shape[3]};
  const int64_t n = t.shape[2];
  const size_t row = t.shape[3] * DTypeSize(t.dtype);
  for (int64_t bh = 0; bh < t.shape[0] * t.shape[1]; ++bh)
    s.bytes.append(t.bytes.data() + (bh * n + start) * row, len * row);
  return s;
}

}  // namespace

int RunBench(int argc, char** argv) {
  auto args = Args::Parse(argc, argv);
  if (!args.ok()) return UsageError(args.status(), Help());
  if (args->Has("help")) return std::printf("%s", Help().c_str()), kExitOk;
  auto options = ReadClientOptions(*args);
  auto params = ReadMaskParams(*args);
  const bool json = args->Has("json");
  const std::string mode = args->String("mode", "unary");
  auto concurrency = args->Int("concurrency", 1), requests = args->Int("requests", 20),
       warmup = args->Int("warmup", 2), chunks = args->Int("chunks", 1), seq_len = args->Int("seq_len", 4096),
       heads = args->Int("heads", 8), head_dim = args->Int("head_dim", 64), block = args->Int("block_size", 64),
       seed = args->Int("seed", 1);
  auto kv_heads = args->Int("kv_heads", heads.ok() ? *heads : 0);
  auto dtype = ParseDType(args->String("dtype", "fp32"));
  auto format = ParseMaskFormat(args->String("format", "bsr"));
  auto reps = args->Bool("representatives", false);
  auto precomputed = args->Bool("precomputed", false);
  for (const absl::Status& s :
       {options.status(), params.status(), concurrency.status(), requests.status(), warmup.status(), chunks.status(),
        seq_len.status(), heads.status(), head_dim.status(), block.status(), seed.status(), kv_heads.status(),
        dtype.status(), format.status(), reps.status(), precomputed.status(), args->Finish()})
    if (!s.ok()) return UsageError(s, Help());
  if (mode != "unary" && mode != "stream")
    return UsageError(absl::InvalidArgumentError("--mode: unary or stream"), Help());
  if (*concurrency < 1 || *requests < 1 || *chunks < 1 || *warmup < 0)
    return UsageError(absl::InvalidArgumentError("--concurrency, --requests, --chunks must be >= 1"), Help());
  if (*precomputed && (mode != "unary" || !*reps))
    return UsageError(absl::InvalidArgumentError("--precomputed: only with --mode=unary --representatives"), Help());

  const OwnedTensor q = RandomTensor({1, *heads, *seq_len, *head_dim}, *dtype, *seed);
  const OwnedTensor k = RandomTensor({1, *kv_heads, *seq_len, *head_dim}, *dtype, *seed + 1);
  // Stream chunks on whole blocks.
  const int64_t per = ((*seq_len + *chunks - 1) / *chunks + *block - 1) / *block * *block;
  std::vector<std::pair<OwnedTensor, OwnedTensor>> pieces;
  if (mode == "stream")
    for (int64_t s = 0; s < *seq_len; s += per)
      pieces.emplace_back(Slice(q, s, std::min(per, *seq_len - s)), Slice(k, s, std::min(per, *seq_len - s)));

  auto client = Client::Create(*options);
  if (!client.ok()) return UsageError(client.status(), Help());

  PredictInput input;
  input.block_size = static_cast<int>(*block);
  input.params = *params;
  input.format = *format;
  input.q = q.view();
  input.k = k.view();
  input.representatives = *reps;
  v1::PredictRequest prebuilt;  // --precomputed: built once, outside the timed region
  if (*precomputed) {
    auto req = (*client)->BuildPredictRequest(input);
    if (!req.ok()) return RpcError(req.status());
    prebuilt = std::move(*req);
  }

  std::mutex mu;
  std::vector<Sample> samples;
  absl::Status first_error;
  auto one = [&](Sample* out) -> absl::Status {
    auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<MaskReply> reply;
    if (mode == "unary") {
      reply = *precomputed ? (*client)->Predict(prebuilt) : (*client)->Predict(input);
    } else {
      SessionOptions so;
      so.heads = static_cast<int>(*heads);
      so.kv_heads = static_cast<int>(*kv_heads);
      so.head_dim = static_cast<int>(*head_dim);
      so.block_size = static_cast<int>(*block);
      so.dtype = *dtype;
      so.params = *params;
      so.format = *format;
      so.representatives = *reps;
      auto session = (*client)->OpenSession(so);
      if (!session.ok()) return session.status();
      t0 = std::chrono::steady_clock::now();  // the stream's latency: first chunk to mask
      for (const auto& [qs, ks] : pieces)
        if (auto s = (*session)->Append(0, qs.view(), ks.view()); !s.ok()) return s;
      reply = (*session)->Mask(0);
      if (reply.ok()) out->latency = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (auto s = (*session)->Close(); !s.ok()) return s;
    }
    if (!reply.ok()) return reply.status();
    if (mode == "unary") out->latency = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    out->server_total = reply->timings.total_seconds();
    out->kernel = reply->timings.coarsen_seconds() + reply->timings.predict_seconds();
    out->request_bytes = reply->request_bytes;
    out->client_encode = reply->client_encode_seconds;
    return absl::OkStatus();
  };

  for (int i = 0; i < *warmup; ++i) {
    Sample ignored;
    if (auto s = one(&ignored); !s.ok()) return RpcError(s);
  }
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int w = 0; w < *concurrency; ++w)
    workers.emplace_back([&] {
      for (int i = 0; i < *requests; ++i) {
        Sample s;
        absl::Status st = one(&s);
        std::lock_guard<std::mutex> lock(mu);
        if (!st.ok()) {
          if (first_error.ok()) first_error = st;
          return;
        }
        samples.push_back(s);
      }
    });
  for (auto& t : workers) t.join();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!first_error.ok()) return RpcError(first_error);

  std::vector<double> lat;
  double sum_lat = 0, sum_total = 0, sum_kernel = 0, sum_encode = 0;
  for (const auto& s : samples) {
    lat.push_back(s.latency);
    sum_lat += s.latency;
    sum_total += s.server_total;
    sum_kernel += s.kernel;
    sum_encode += s.client_encode;
  }
  const double n = static_cast<double>(samples.size());
  const double p50 = Percentile(lat, 0.5), p99 = Percentile(lat, 0.99), mean = sum_lat / n;
  const double kernel = sum_kernel / n, server = sum_total / n;
  // Everything in the client-observed time that is not the server's kernels.
  const double overhead = mean > 0 ? (mean - kernel) / mean : 0;
  if (json) {
    JsonObject out;
    out.Add("command", "bench").Add("mode", mode).Add("policy", Name(params->policy)).Add("seq_len", *seq_len)
        .Add("heads", *heads).Add("kv_heads", *kv_heads).Add("head_dim", *head_dim).Add("block_size", *block)
        .Add("dtype", DTypeName(*dtype)).Add("representatives", *reps).Add("precomputed", *precomputed)
        .Add("chunks", *chunks)
        .Add("concurrency", *concurrency).Add("requests", static_cast<int64_t>(samples.size()))
        .Add("p50_seconds", p50).Add("p99_seconds", p99).Add("mean_seconds", mean)
        .Add("throughput_per_second", n / wall).Add("server_total_seconds", server).Add("kernel_seconds", kernel)
        .Add("server_overhead_seconds", server - kernel).Add("transport_client_seconds", mean - server)
        .Add("client_encode_seconds", sum_encode / n)
        .Add("overhead_fraction", overhead).Add("request_bytes", samples.empty() ? 0 : samples[0].request_bytes);
    std::printf("%s\n", out.str().c_str());
  } else {
    std::printf("%s %s N=%ld H=%ld/%ld D=%ld block=%ld %s%s  concurrency %ld  %zu requests in %.2f s\n",
                mode.c_str(), Name(params->policy).c_str(), *seq_len, *heads, *kv_heads, *head_dim, *block,
                DTypeName(*dtype).c_str(), *reps ? (*precomputed ? " representatives (precomputed)" : " representatives") : "",
                *concurrency, samples.size(), wall);
    std::printf("latency p50 %.3f ms  p99 %.3f ms  mean %.3f ms  throughput %.1f/s\n", p50 * 1e3, p99 * 1e3,
                mean * 1e3, n / wall);
    std::printf("server %.3f ms (kernels %.3f ms, other %.3f ms)  transport+client %.3f ms  non-kernel share %.1f%%\n",
                server * 1e3, kernel * 1e3, (server - kernel) * 1e3, (mean - server) * 1e3, overhead * 100);
  }
  return kExitOk;
}

}  // namespace cab::cli
