// Block-sparse attention benchmark on the GPU (CUDA events, median of --reps after warm-up).
// For each N: random bf16 Q/K/V [1, H, N, D] on the device; max-L2 block representatives computed
// on the device; masks from the CAB predictor (CPU backend, in process; policy cab, or dense at
// sparsity 0); each mask written in the FlexAttention layout (.npy) for flex_bench.py; then the
// block-sparse prefill variants (kernels, CTA order, mask layout) checked against the default's
// output and timed in alternating order. Also decode over
// keep-indices (split-K) at the same N. Prints a table and writes CSV to --out.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cab/attention/backend.h"
#include "cab/attention/cuda_attention.h"
#include "cab/backend.h"
#include "cab/coarse.h"
#include "cab/params.h"

namespace {

#define CHECK_CUDA(expr)                                                                   \
  do {                                                                                     \
    cudaError_t e_ = (expr);                                                               \
    if (e_ != cudaSuccess) {                                                               \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)

struct Flags {
  std::vector<int64_t> n = {16384, 65536, 131072};
  std::vector<double> sparsity = {0, 0.9, 0.95, 0.99};
  int heads = 32, dim = 128, block = 128, reps = 10, warmup = 3;
  std::string out = "attention-bench";
  std::string masks = "cab";  // cab | synthetic
  bool decode = true;
};

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');) out.push_back(x);
  return out;
}

Flags Parse(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    const auto eq = a.find('=');
    const std::string key = a.substr(0, eq), val = eq == std::string::npos ? "" : a.substr(eq + 1);
    if (key == "--n") { f.n.clear(); for (auto& x : Split(val)) f.n.push_back(std::stoll(x)); }
    else if (key == "--sparsity") { f.sparsity.clear(); for (auto& x : Split(val)) f.sparsity.push_back(std::stod(x)); }
    else if (key == "--heads") f.heads = std::stoi(val);
    else if (key == "--dim") f.dim = std::stoi(val);
    else if (key == "--block") f.block = std::stoi(val);
    else if (key == "--reps") f.reps = std::stoi(val);
    else if (key == "--warmup") f.warmup = std::stoi(val);
    else if (key == "--out") f.out = val;
    else if (key == "--masks") f.masks = val;
    else if (key == "--no_decode") f.decode = false;
    else { std::fprintf(stderr, "unknown flag %s\n", a.c_str()); std::exit(2); }
  }
  return f;
}

__device__ uint32_t Hash(uint64_t x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
  return static_cast<uint32_t>(x);
}
// Uniform values in [-amp, amp] (never zeros: zeros hide bugs and time faster).
__global__ void FillRandom(__nv_bfloat16* p, int64_t n, uint64_t seed, float amp) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float u = (Hash(seed * 0x9e3779b97f4a7c15ULL + i) >> 8) * (1.0f / 16777216.0f);
    p[i] = __float2bfloat16_rn((2.f * u - 1.f) * amp);
  }
}
// Max-L2 representative per (head, block): one CTA per block, one warp per token at a time.
__global__ void MaxL2Reps(const __nv_bfloat16* x, float* reps, int64_t n, int d, int bs, int blocks) {
  const int hb = blockIdx.x, h = hb / blocks, m = hb % blocks;
  __shared__ float best[32];
  __shared__ int64_t arg[32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  float bn = -1.f;
  int64_t bt = 0;
  for (int64_t t = int64_t(m) * bs + warp; t < min(n, int64_t(m + 1) * bs); t += warps) {
    const __nv_bfloat16* row = x + (int64_t(h) * n + t) * d;
    float s = 0.f;
    for (int c = lane; c < d; c += 32) { const float v = __bfloat162float(row[c]); s += v * v; }
    for (int off = 16; off; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (s > bn) { bn = s; bt = t; }  // tokens visited ascending: ties keep the lowest index
  }
  if (lane == 0) { best[warp] = bn; arg[warp] = bt; }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < warps; ++w) {
      if (best[w] > best[0] || (best[w] == best[0] && arg[w] < arg[0])) { best[0] = best[w]; arg[0] = arg[w]; }
    }
  }
  __syncthreads();
  const __nv_bfloat16* row = x + (int64_t(h) * n + arg[0]) * d;
  for (int c = threadIdx.x; c < d; c += blockDim.x) reps[(int64_t(h) * blocks + m) * d + c] = __bfloat162float(row[c]);
}

void WriteNpyInt32(const std::string& path, const std::vector<int64_t>& shape, const int32_t* data) {
  std::string dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (";
  int64_t n = 1;
  for (auto s : shape) { dict += std::to_string(s) + ", "; n *= s; }
  dict += "), }";
  const size_t total = 10 + dict.size() + 1;
  dict += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::ofstream f(path, std::ios::binary);
  const char magic[] = "\x93NUMPY\x01\x00";
  f.write(magic, 8);
  const uint16_t len = static_cast<uint16_t>(dict.size());
  f.write(reinterpret_cast<const char*>(&len), 2);
  f.write(dict.data(), dict.size());
  f.write(reinterpret_cast<const char*>(data), n * 4);
}

// A stand-in when the predictor is unavailable: diagonal, sink, local window and evenly spread
// blocks, with the cab row budget. Reported as "synthetic" in the table.
cab::BlockMask SyntheticMask(int heads, int blocks, double sparsity) {
  cab::MaskParams p;
  p.sparsity = static_cast<float>(sparsity);
  cab::BlockMask m;
  m.batch = 1; m.heads = heads; m.rows = m.cols = blocks;
  m.row_offsets.push_back(0);
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < blocks; ++i) {
      const int k = std::min(i + 1, std::max(1, cab::RowBudget(p, i)));
      std::vector<int32_t> row = {i};
      if (i > 0) row.push_back(0);
      if (i > 1) row.push_back(i - 1);
      for (int e = 0; static_cast<int>(row.size()) < k; ++e) row.push_back(static_cast<int32_t>((int64_t(e) * 7919 + h * 31 + i) % i));
      std::sort(row.begin(), row.end());
      row.erase(std::unique(row.begin(), row.end()), row.end());
      for (int32_t j = 0; static_cast<int>(row.size()) < k && j < i; ++j) {
        if (!std::binary_search(row.begin(), row.end(), j)) { row.push_back(j); std::sort(row.begin(), row.end()); }
      }
      m.col_indices.insert(m.col_indices.end(), row.begin(), row.end());
      m.row_offsets.push_back(static_cast<int64_t>(m.col_indices.size()));
    }
  }
  return m;
}

double Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

template <typename Fn>
double TimeMedianMs(Fn fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<cudaEvent_t> ev(2 * reps);
  for (auto& e : ev) CHECK_CUDA(cudaEventCreate(&e));
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaEventRecord(ev[2 * i]));
    fn();
    CHECK_CUDA(cudaEventRecord(ev[2 * i + 1]));
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; ++i) CHECK_CUDA(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
  for (auto& e : ev) cudaEventDestroy(e);
  return Median(ms);
}

// Runs every variant `warmup` times, then `reps` rounds in which each variant runs once, the
// round's first variant rotating: no variant is always timed first or last (run 6 saw late-timed
// variants lose 1-4%). Returns each variant's median.
std::vector<double> TimeInterleavedMs(const std::vector<std::function<void()>>& fns, int warmup, int reps) {
  const int nv = static_cast<int>(fns.size());
  for (const auto& fn : fns) for (int i = 0; i < warmup; ++i) fn();
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<cudaEvent_t> ev(2 * size_t(reps) * nv);
  for (auto& e : ev) CHECK_CUDA(cudaEventCreate(&e));
  for (int r = 0; r < reps; ++r) {
    for (int j = 0; j < nv; ++j) {
      const int v = (r + j) % nv;
      CHECK_CUDA(cudaEventRecord(ev[2 * (size_t(r) * nv + v)]));
      fns[v]();
      CHECK_CUDA(cudaEventRecord(ev[2 * (size_t(r) * nv + v) + 1]));
    }
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<double> med(nv);
  for (int v = 0; v < nv; ++v) {
    std::vector<float> ms(reps);
    for (int r = 0; r < reps; ++r) {
      CHECK_CUDA(cudaEventElapsedTime(&ms[r], ev[2 * (size_t(r) * nv + v)], ev[2 * (size_t(r) * nv + v) + 1]));
    }
    med[v] = Median(ms);
  }
  for (auto& e : ev) cudaEventDestroy(e);
  return med;
}

struct Buf {
  void* p = nullptr;
  explicit Buf(size_t n) { CHECK_CUDA(cudaMalloc(&p, n ? n : 1)); }
  ~Buf() { cudaFree(p); }
  template <typename T> T* as() const { return static_cast<T*>(p); }
};

// A prefill variant the benchmark times: its CSV column and its arguments.
struct Variant {
  const char* name;
  cab::attention::cuda::PrefillArgs args;
};
const char* const kVariantColumns =
    "ours_ms,tma_no_pingpong_ms,wgmma_cpasync_ms,wgmma_rows_ms,ours_flex_layout_ms,mma_sync_ms";

// The last `tail` bf16 elements of a device array of `elems`, widened to float.
std::vector<float> TailAsFloat(const void* dev, int64_t elems, int64_t tail) {
  std::vector<uint16_t> raw(tail);
  CHECK_CUDA(cudaMemcpy(raw.data(), static_cast<const char*>(dev) + (elems - tail) * 2, tail * 2, cudaMemcpyDeviceToHost));
  std::vector<float> out(tail);
  for (int64_t i = 0; i < tail; ++i) {
    const uint32_t bits = uint32_t(raw[i]) << 16;
    std::memcpy(&out[i], &bits, 4);
  }
  return out;
}

// ||got - want|| / ||want||.
double RelL2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Prefill and decode of a small bf16 problem through every available attention backend; prints
// each one's relative error against the CPU backend's output.
bool CheckBackendAgainstCpu() {
  namespace at = cab::attention;
  const int B = 1, Hq = 4, Hkv = 2, N = 1000, D = 128, BS = 128, M = (N + BS - 1) / BS;
  std::vector<uint16_t> q(size_t(B) * Hq * N * D), k(size_t(B) * Hkv * N * D), v(k.size());
  uint64_t x = 88172645463325252ull;
  auto fill = [&](std::vector<uint16_t>& t) {
    for (auto& e : t) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      const float f = (static_cast<float>(x >> 40) / float(1 << 24)) * 2.f - 1.f;
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      e = static_cast<uint16_t>(bits >> 16);  // bf16 by truncation: any bf16 values will do
    }
  };
  fill(q), fill(k), fill(v);
  const cab::TensorView tq{q.data(), cab::DType::kBF16, {B, Hq, N, D}}, tk{k.data(), cab::DType::kBF16, {B, Hkv, N, D}},
      tv{v.data(), cab::DType::kBF16, {B, Hkv, N, D}};
  const cab::BlockMask mask = at::DenseMask(B, Hq, M, true);
  auto cpu = at::MakeCpuAttentionBackend();
  at::PrefillOptions po;
  po.block_size = BS;
  auto want = cpu->Prefill(tq, tk, tv, mask, po);
  const cab::TensorView dq{q.data(), cab::DType::kBF16, {B, Hq, 2, D}};
  auto want_d = cpu->Decode(dq, tk, tv, nullptr, {});
  if (!want.ok() || !want_d.ok()) return std::fprintf(stderr, "cpu backend failed\n"), false;
  for (const std::string& name : at::AvailableAttentionBackends()) {
    auto b = at::MakeAttentionBackend(name);
    if (!b.ok()) continue;
    auto got = (*b)->Prefill(tq, tk, tv, mask, po);
    auto got_d = (*b)->Decode(dq, tk, tv, nullptr, {});
    if (!got.ok() || !got_d.ok()) return std::fprintf(stderr, "%s backend failed\n", name.c_str()), false;
    const double e = *at::RelativeError(got->out, want->out), ed = *at::RelativeError(got_d->out, want_d->out);
    std::printf("attention backend %s (%s): prefill rel. error vs cpu %.2e, decode %.2e\n", name.c_str(),
                (*b)->Device().c_str(), e, ed);
    if (!(e < 1e-2 && ed < 1e-2)) return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const Flags f = Parse(argc, argv);
  std::string cmd = "mkdir -p '" + f.out + "'";
  if (std::system(cmd.c_str()) != 0) return 1;
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  // The attention backend the host API picks, checked once against the CPU backend on a small
  // problem before anything is timed (the timed runs below use the device-pointer entry points).
  if (!CheckBackendAgainstCpu()) return 1;
  auto backend = cab::MakeCpuBackend();
  const int H = f.heads, D = f.dim, BS = f.block;
  std::ofstream csv(f.out + "/attention_bench.csv");
  // Variant columns in the order main() builds them (see kVariantColumns).
  csv << "n,sparsity,mask_source,density,kept_blocks,predict_ms_cpu,ours_tflops_kept,variants_max_rel_diff," << kVariantColumns << "\n";
  std::ofstream dcsv(f.out + "/decode_bench.csv");
  dcsv << "n,keep,q_heads,kv_heads,ms,gbps\n";
  std::printf("%8s %6s %10s %8s %10s %12s %8s %10s %10s %10s %10s %10s %10s\n", "N", "sparse", "masks", "density", "predict_ms",
              "TFLOP/s kept", "var.diff", "ours_ms", "tma-nopp", "cp.async", "rows-order", "flexlay_ms", "mma.sync");
  for (int64_t N : f.n) {
    const int M = static_cast<int>((N + BS - 1) / BS);
    const int64_t elems = int64_t(H) * N * D;
    Buf q(elems * 2), k(elems * 2), v(elems * 2), o(elems * 2);
    FillRandom<<<1024, 256>>>(q.as<__nv_bfloat16>(), elems, 1 + N, 1.f);
    FillRandom<<<1024, 256>>>(k.as<__nv_bfloat16>(), elems, 2 + N, 1.f);
    FillRandom<<<1024, 256>>>(v.as<__nv_bfloat16>(), elems, 3 + N, 1.f);
    CHECK_CUDA(cudaGetLastError());
    // Coarse representatives on the device, the predictor on the CPU backend.
    Buf rq(size_t(H) * M * D * 4), rk(size_t(H) * M * D * 4);
    MaxL2Reps<<<H * M, 256>>>(q.as<__nv_bfloat16>(), rq.as<float>(), N, D, BS, M);
    MaxL2Reps<<<H * M, 256>>>(k.as<__nv_bfloat16>(), rk.as<float>(), N, D, BS, M);
    CHECK_CUDA(cudaGetLastError());
    std::vector<float> hq(size_t(H) * M * D), hk(hq.size());
    CHECK_CUDA(cudaMemcpy(hq.data(), rq.p, hq.size() * 4, cudaMemcpyDeviceToHost));
    CHECK_CUDA(cudaMemcpy(hk.data(), rk.p, hk.size() * 4, cudaMemcpyDeviceToHost));
    const cab::TensorView vq{hq.data(), cab::DType::kF32, {1, H, M, D}}, vk{hk.data(), cab::DType::kF32, {1, H, M, D}};
    auto cq = cab::CoarseFromRepresentatives(vq, nullptr, nullptr, BS, N);
    auto ck = cab::CoarseFromRepresentatives(vk, nullptr, nullptr, BS, N);

    for (double s : f.sparsity) {
      cab::BlockMask mask;
      std::string source = f.masks;
      double predict_ms = 0;
      if (f.masks == "cab" && cq.ok() && ck.ok()) {
        cab::MaskParams p;
        p.policy = s == 0 ? cab::MaskPolicy::kDense : cab::MaskPolicy::kCab;
        p.sparsity = static_cast<float>(s);
        const auto t0 = std::chrono::steady_clock::now();
        auto r = backend->PredictMask(*cq, *ck, p, false);
        predict_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (r.ok()) {
          mask = std::move(r->mask);
          source = s == 0 ? "dense" : "cab";
        } else {
          std::fprintf(stderr, "PredictMask failed (%s); using the synthetic mask\n", r.status().ToString().c_str());
          source = "synthetic";
        }
      } else if (f.masks == "cab") {
        std::fprintf(stderr, "coarse reps failed: %s\n", (cq.ok() ? ck.status() : cq.status()).ToString().c_str());
        source = "synthetic";
      }
      if (source == "synthetic") mask = SyntheticMask(H, M, s);
      // Flex layout (own conversion, so the bench does not depend on the format code's state).
      int max_k = 1;
      const int64_t rows = int64_t(H) * M;
      for (int64_t r = 0; r < rows; ++r) max_k = std::max<int>(max_k, mask.row_offsets[r + 1] - mask.row_offsets[r]);
      std::vector<int32_t> num(rows), idx(rows * max_k, 0);
      for (int64_t r = 0; r < rows; ++r) {
        num[r] = static_cast<int32_t>(mask.row_offsets[r + 1] - mask.row_offsets[r]);
        std::copy(mask.col_indices.begin() + mask.row_offsets[r], mask.col_indices.begin() + mask.row_offsets[r + 1], idx.begin() + r * max_k);
      }
      char tag[64];
      std::snprintf(tag, sizeof tag, "n%lld_s%.2f", static_cast<long long>(N), s);
      WriteNpyInt32(f.out + "/flex_" + tag + "_num.npy", {1, H, M}, num.data());
      WriteNpyInt32(f.out + "/flex_" + tag + "_idx.npy", {1, H, M, max_k}, idx.data());

      Buf doff(mask.row_offsets.size() * 8), dcol(mask.col_indices.size() * 4), dnum(num.size() * 4), didx(idx.size() * 4);
      CHECK_CUDA(cudaMemcpy(doff.p, mask.row_offsets.data(), mask.row_offsets.size() * 8, cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMemcpy(dcol.p, mask.col_indices.data(), mask.col_indices.size() * 4, cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMemcpy(dnum.p, num.data(), num.size() * 4, cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMemcpy(didx.p, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));
      cab::attention::cuda::PrefillArgs a;
      a.dtype = cab::DType::kBF16;
      a.q = q.p; a.k = k.p; a.v = v.p; a.o = o.p;
      a.batch = 1; a.q_heads = H; a.kv_heads = H; a.head_dim = D; a.tokens = N; a.block_size = BS;
      a.causal = true; a.mask_heads = H;
      a.row_offsets = doff.as<int64_t>(); a.col_indices = dcol.as<int32_t>();
      // The variants, each checked on the same output buffer (poisoned first) against the default's
      // output on the last rows, then timed in alternating order (TimeInterleavedMs).
      namespace acu = cab::attention::cuda;
      std::vector<Variant> variants;
      variants.push_back({"ours_ms", a});  // the default (kAuto)
      acu::PrefillArgs av = a;
      av.kernel = acu::PrefillKernel::kWgmmaTmaNoPingPong;
      variants.push_back({"tma_no_pingpong_ms", av});
      av.kernel = acu::PrefillKernel::kWgmma;  // the cp.async kernel (default of rounds 1-2)
      variants.push_back({"wgmma_cpasync_ms", av});
      av = a;
      av.order = acu::TileOrder::kRowsAcrossHeads;  // the default kernel in round 1's CTA order
      variants.push_back({"wgmma_rows_ms", av});
      av = a;
      av.row_offsets = nullptr; av.col_indices = nullptr;
      av.kv_num_blocks = dnum.as<int32_t>(); av.kv_indices = didx.as<int32_t>(); av.max_k = max_k;
      variants.push_back({"ours_flex_layout_ms", av});
      av = a;
      av.kernel = acu::PrefillKernel::kMmaSync;  // the portable kernel
      variants.push_back({"mma_sync_ms", av});
      std::string names;
      for (const Variant& var : variants) names += std::string(names.empty() ? "" : ",") + var.name;
      if (names != kVariantColumns) { std::fprintf(stderr, "variant columns out of date: %s\n", names.c_str()); return 1; }
      // Every output written (the poison is NaN) and finite, and every variant agrees with the default.
      const int64_t tail = std::min<int64_t>(elems, 1 << 22);
      std::vector<float> want;
      double worst = 0;
      for (const Variant& var : variants) {
        CHECK_CUDA(cudaMemset(o.p, 0xff, elems * 2));
        const auto st = acu::Prefill(var.args, nullptr);
        if (!st.ok()) { std::fprintf(stderr, "prefill %s: %s\n", var.name, st.ToString().c_str()); return 1; }
        CHECK_CUDA(cudaDeviceSynchronize());
        std::vector<float> got = TailAsFloat(o.p, elems, tail);
        for (float x : got) if (!std::isfinite(x)) { std::fprintf(stderr, "%s: non-finite output\n", var.name); return 1; }
        if (want.empty()) want = got;
        worst = std::max(worst, RelL2(got, want));
      }
      if (!(worst < 1e-2)) { std::fprintf(stderr, "variants disagree: rel. error %.3e\n", worst); return 1; }
      std::vector<std::function<void()>> fns;
      for (const Variant& var : variants) fns.push_back([&var] { (void)cab::attention::cuda::Prefill(var.args, nullptr); });
      const std::vector<double> t = TimeInterleavedMs(fns, f.warmup, f.reps);
      CHECK_CUDA(cudaGetLastError());
      const double ms = t[0];
      const double kept = static_cast<double>(mask.kept());
      const double density = kept / (double(H) * M * (M + 1) / 2);
      const double tflops = 4.0 * D * BS * BS * kept / (ms * 1e-3) / 1e12;
      std::printf("%8lld %6.2f %10s %8.4f %10.1f %12.1f %8.1e", static_cast<long long>(N), s, source.c_str(), density,
                  predict_ms, tflops, worst);
      for (double x : t) std::printf(" %10.3f", x);
      std::printf("\n");
      std::fflush(stdout);
      csv << N << "," << s << "," << source << "," << density << "," << mask.kept() << "," << predict_ms << "," << tflops
          << "," << worst;
      for (double x : t) csv << "," << x;
      csv << "\n";
    }
    if (f.decode) {
      // Decode: one new query per head, GQA 4 (32 q heads over 8 kv heads), keep-indices spread
      // over the cache; bandwidth counts the K and V rows read.
      const int Hkv = H / 4;
      for (double s : f.sparsity) {
        const int64_t keep = std::max<int64_t>(1, static_cast<int64_t>(N * (1 - s)));
        std::vector<int32_t> idx(size_t(Hkv) * keep);
        for (int h = 0; h < Hkv; ++h)
          for (int64_t e = 0; e < keep; ++e) idx[h * keep + e] = static_cast<int32_t>(e * N / keep + (h % 2) * ((N / keep) > 1));
        Buf didx(idx.size() * 4), dq(size_t(H) * D * 2), dout(size_t(H) * D * 2);
        FillRandom<<<64, 256>>>(dq.as<__nv_bfloat16>(), int64_t(H) * D, 7 + N, 1.f);
        CHECK_CUDA(cudaMemcpy(didx.p, idx.data(), idx.size() * 4, cudaMemcpyHostToDevice));
        cab::attention::cuda::DecodeArgs d;
        d.dtype = cab::DType::kBF16;
        d.q = dq.p; d.k = k.p; d.v = v.p; d.o = dout.p;  // k, v reinterpreted as [1, Hkv, N, D]
        d.batch = 1; d.q_heads = H; d.kv_heads = Hkv; d.q_len = 1; d.head_dim = D; d.tokens = N;
        if (s > 0) { d.indices = didx.as<int32_t>(); d.keep = keep; }
        d.workspace_bytes = cab::attention::cuda::DecodeWorkspaceBytes(d);
        Buf ws(d.workspace_bytes);
        d.workspace = ws.p;
        const double ms = TimeMedianMs([&] { (void)cab::attention::cuda::Decode(d, nullptr); }, f.warmup, f.reps * 5);
        CHECK_CUDA(cudaGetLastError());
        const double gbps = 2.0 * Hkv * keep * D * 2 / (ms * 1e-3) / 1e9;
        std::printf("decode N=%lld keep=%lld Hq=%d Hkv=%d: %.4f ms, %.0f GB/s of K/V rows\n", static_cast<long long>(N),
                    static_cast<long long>(keep), H, Hkv, ms, gbps);
        dcsv << N << "," << keep << "," << H << "," << Hkv << "," << ms << "," << gbps << "\n";
      }
    }
  }
  return 0;
}
