// cab-client predict: one block mask for a synthetic (by --seed) or file (--input) Q/K, through
// the unary Predict, or through a session stream in --chunks pieces.
#include <chrono>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cab/tensor_file.h"
#include "commands.h"
#include "common.h"
#include "synthetic.h"

namespace cab::cli {
namespace {

std::string Help() {
  return "usage: cab-client predict --server=HOST:PORT [flags]\n"
         "input:\n"
         "  --seq_len=4096 --heads=8 --kv_heads=HEADS --head_dim=64 --batch=1 --block_size=64\n"
         "  --dtype=fp32|fp16|bf16 --seed=1      synthetic Gaussian Q/K\n"
         "  --input=FILE.safetensors | Q.npy,K.npy  (tensors q [B,Hq,N,D], k [B,Hkv,N,D]); --npy_bf16\n"
         "  --representatives     coarsen here, send only representatives\n"
         "  --chunks=0            >0: send through a session stream in this many chunks\n"
         "output:\n"
         "  --format=bsr|bitmap|flex --rows=BEGIN:END --diagnostics --print_rows=0\n" +
         MaskFlagsHelp() + ClientFlagsHelp();
}

}  // namespace

int RunPredict(int argc, char** argv) {
  auto args = Args::Parse(argc, argv);
  if (!args.ok()) return UsageError(args.status(), Help());
  if (args->Has("help")) return std::printf("%s", Help().c_str()), kExitOk;
  auto options = ReadClientOptions(*args);
  auto params = ReadMaskParams(*args);
  const bool json = args->Has("json");
  auto seq_len = args->Int("seq_len", 4096), heads = args->Int("heads", 8), head_dim = args->Int("head_dim", 64),
       batch = args->Int("batch", 1), block = args->Int("block_size", 64), seed = args->Int("seed", 1),
       chunks = args->Int("chunks", 0), print_rows = args->Int("print_rows", 0);
  auto kv_heads = args->Int("kv_heads", heads.ok() ? *heads : 0);
  auto dtype = ParseDType(args->String("dtype", "fp32"));
  auto format = ParseMaskFormat(args->String("format", "bsr"));
  auto reps = args->Bool("representatives", false);
  auto diagnostics = args->Bool("diagnostics", false);
  auto npy_bf16 = args->Bool("npy_bf16", false);
  const std::string input = args->String("input", "");
  const std::string rows = args->String("rows", "");
  for (const absl::Status& s :
       {options.status(), params.status(), seq_len.status(), heads.status(), head_dim.status(), batch.status(),
        block.status(), seed.status(), chunks.status(), print_rows.status(), kv_heads.status(), dtype.status(),
        format.status(), reps.status(), diagnostics.status(), npy_bf16.status(), args->Finish()})
    if (!s.ok()) return UsageError(s, Help());
  int row_begin = 0, row_end = 0;
  if (!rows.empty() && std::sscanf(rows.c_str(), "%d:%d", &row_begin, &row_end) != 2)
    return UsageError(absl::InvalidArgumentError("--rows: want BEGIN:END"), Help());

  QkTensors qk;
  if (!input.empty()) {
    auto loaded = LoadQk(input, NpyOptions{*npy_bf16});
    if (!loaded.ok()) return UsageError(loaded.status(), Help());
    qk = std::move(*loaded);
  } else {
    if (*seq_len <= 0 || *heads <= 0 || *kv_heads <= 0 || *head_dim <= 0 || *batch <= 0)
      return UsageError(absl::InvalidArgumentError("--seq_len, --heads, --kv_heads, --head_dim, --batch must be > 0"), Help());
    qk.q = RandomTensor({*batch, *heads, *seq_len, *head_dim}, *dtype, *seed);
    qk.k = RandomTensor({*batch, *kv_heads, *seq_len, *head_dim}, *dtype, *seed + 1);
  }
  if (qk.q.shape.size() != 4 || qk.k.shape.size() != 4)
    return UsageError(absl::InvalidArgumentError("input: q and k must be 4-D [B, H, N, D]"), Help());

  auto client = Client::Create(*options);
  if (!client.ok()) return UsageError(client.status(), Help());
  params->row_begin = row_begin;
  params->row_end = row_end == 0 ? -1 : row_end;

  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<MaskReply> reply;
  if (*chunks > 0) {
    SessionOptions so;
    so.heads = static_cast<int>(qk.q.shape[1]);
    so.kv_heads = static_cast<int>(qk.k.shape[1]);
    so.head_dim = static_cast<int>(qk.q.shape[3]);
    so.batch = static_cast<int>(qk.q.shape[0]);
    so.block_size = static_cast<int>(*block);
    so.dtype = qk.q.dtype;
    so.params = *params;
    so.format = *format;
    so.representatives = *reps;
    auto session = (*client)->OpenSession(so);
    if (!session.ok()) return RpcError(session.status());
    const int64_t n = qk.q.shape[2];
    // Chunk boundaries on whole blocks (a representatives session needs them; harmless otherwise).
    const int64_t per = ((n + *chunks - 1) / *chunks + *block - 1) / *block * *block;
    for (int64_t start = 0; start < n; start += per) {
      const int64_t len = std::min(per, n - start);
      auto slice = [&](const OwnedTensor& t) {
        OwnedTensor s;
        s.dtype = t.dtype;
        s.shape = {t.shape[0], t.shape[1], len, t.shape[3]};
        const size_t row = t.shape[3] * DTypeSize(t.dtype);
        for (int64_t bh = 0; bh < t.shape[0] * t.shape[1]; ++bh)
          s.bytes.append(t.bytes.data() + (bh * n + start) * row, len * row);
        return s;
      };
      OwnedTensor qs = slice(qk.q), ks = slice(qk.k);
      if (auto s = (*session)->Append(0, qs.view(), ks.view()); !s.ok()) return RpcError(s);
    }
    reply = (*session)->Mask(0, row_begin, row_end, *diagnostics);
    if (reply.ok()) {
      if (auto s = (*session)->Close(); !s.ok()) return RpcError(s);
    }
  } else {
    PredictInput in;
    in.block_size = static_cast<int>(*block);
    in.params = *params;
    in.format = *format;
    in.diagnostics = *diagnostics;
    in.q = qk.q.view();
    in.k = qk.k.view();
    in.representatives = *reps;
    reply = (*client)->Predict(in);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!reply.ok()) return RpcError(reply.status());

  const BlockMask& m = reply->mask;
  if (json) {
    JsonObject shape;
    shape.Add("batch", qk.q.shape[0]).Add("heads", qk.q.shape[1]).Add("kv_heads", qk.k.shape[1])
        .Add("seq_len", qk.q.shape[2]).Add("head_dim", qk.q.shape[3]).Add("block_size", *block);
    JsonObject out;
    out.Add("command", "predict").Add("policy", Name(params->policy)).AddRaw("shape", shape.str())
        .Add("dtype", DTypeName(qk.q.dtype)).Add("format", Name(reply->format)).Add("representatives", *reps)
        .Add("stream", *chunks > 0).Add("density", reply->density).Add("kept_blocks", m.kept())
        .Add("row_begin", m.row_begin).Add("rows", m.rows).Add("cols", m.cols)
        .Add("client_seconds", seconds).Add("request_bytes", reply->request_bytes)
        .Add("response_bytes", reply->response_bytes).AddRaw("timings", TimingsJson(reply->timings));
    std::printf("%s\n", out.str().c_str());
  } else {
    std::printf("policy %s  shape q[%ld,%ld,%ld,%ld] k[%ld,%ld,%ld,%ld]  block %ld  dtype %s  format %s%s%s\n",
                Name(params->policy).c_str(), qk.q.shape[0], qk.q.shape[1], qk.q.shape[2], qk.q.shape[3],
                qk.k.shape[0], qk.k.shape[1], qk.k.shape[2], qk.k.shape[3], *block, DTypeName(qk.q.dtype).c_str(),
                Name(reply->format).c_str(), *reps ? "  (representatives)" : "", *chunks > 0 ? "  (stream)" : "");
    std::printf("rows [%d, %d) of %d blocks  kept %ld blocks  density %.4f\n", m.row_begin, m.row_begin + m.rows,
                m.cols, m.kept(), reply->density);
    std::printf("client %.3f ms  server %.3f ms (coarsen %.3f, predict %.3f)  sent %ld B  received %ld B\n",
                seconds * 1e3, reply->timings.total_seconds() * 1e3, reply->timings.coarsen_seconds() * 1e3,
                reply->timings.predict_seconds() * 1e3, reply->request_bytes, reply->response_bytes);
    for (int r = 0; r < std::min<int64_t>(*print_rows, m.rows); ++r) {
      std::string cols;
      for (int64_t i = m.row_offsets[r]; i < m.row_offsets[r + 1]; ++i) absl::StrAppend(&cols, " ", m.col_indices[i]);
      std::printf("  row %d:%s\n", m.row_begin + r, cols.c_str());
    }
  }
  return kExitOk;
}

}  // namespace cab::cli
