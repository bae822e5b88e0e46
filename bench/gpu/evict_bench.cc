// Eviction (SPEC 4) through the Backend interface, CUDA plugin vs CPU backend: wall time of one
// Evict call from host tensors to keep indices (upload, device work, download included), median of
// several runs after a warm-up, and whether the two backends kept the same tokens. B = 1, Hq = 32,
// Hkv = 8, D = 128, bf16 keys / window / scores, keep = N / 10, window 64 queries, blocks of 64.
//
//   cab-bench-evict [--n=32768,131072] [--iters=10] [--cpu_threads=16] [--out=FILE]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cab/backend.h"
#include "cuda_backend.h"

namespace {

std::vector<uint16_t> RandomBf16(size_t n, uint64_t seed) {
  std::vector<uint16_t> v(n);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (auto& x : v) x = cab::FloatToBF16(normal(rng));
  return v;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median wall milliseconds of `iters` calls after one warm-up; *out gets the last answer.
double TimeEvict(cab::Backend& b, const cab::EvictInputs& in, const cab::EvictParams& p, int iters,
                 cab::KeepIndices* out) {
  std::vector<double> ms;
  for (int i = 0; i <= iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = b.Evict(in, p);
    const auto t1 = std::chrono::steady_clock::now();
    if (!r.ok()) {
      std::fprintf(stderr, "%s evict: %s\n", b.Name().c_str(), r.status().ToString().c_str());
      std::exit(1);
    }
    if (i > 0) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    *out = std::move(*r);
  }
  return Median(ms);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> sizes = {32768, 131072};
  int iters = 10, cpu_threads = 16;
  std::string out_path;
  for (int a = 1; a < argc; ++a) {
    const char* s = argv[a];
    if (!std::strncmp(s, "--n=", 4)) {
      sizes.clear();
      for (const char* c = s + 4; *c;) {
        sizes.push_back(std::atoll(c));
        const char* comma = std::strchr(c, ',');
        if (!comma) break;
        c = comma + 1;
      }
    } else if (!std::strncmp(s, "--iters=", 8)) {
      iters = std::max(1, std::atoi(s + 8));
    } else if (!std::strncmp(s, "--cpu_threads=", 14)) {
      cpu_threads = std::atoi(s + 14);
    } else if (!std::strncmp(s, "--out=", 6)) {
      out_path = s + 6;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", s);
      return 2;
    }
  }
  auto gpu = cab::cuda::MakeCudaBackend({});
  if (!gpu.ok()) {
    std::fprintf(stderr, "%s\n", gpu.status().ToString().c_str());
    return 1;
  }
  auto cpu = cab::MakeCpuBackend({cpu_threads});
  const int B = 1, Hq = 32, Hkv = 8, D = 128, W = 64;
  std::string table = "| N | policy | CUDA ms | CPU ms | speed-up | rows identical |\n|---|---|---|---|---|---|\n";
  for (int64_t n : sizes) {
    auto keys = RandomBf16(static_cast<size_t>(B) * Hkv * n * D, 1);
    auto window = RandomBf16(static_cast<size_t>(B) * Hq * W * D, 2);
    auto scores = RandomBf16(static_cast<size_t>(B) * Hkv * n, 3);
    cab::TensorView kv{keys.data(), cab::DType::kBF16, {B, Hkv, n, D}};
    cab::TensorView wv{window.data(), cab::DType::kBF16, {B, Hq, W, D}};
    cab::TensorView sv{scores.data(), cab::DType::kBF16, {B, Hkv, n}};
    for (cab::EvictPolicy policy : {cab::EvictPolicy::kH2O, cab::EvictPolicy::kStreaming, cab::EvictPolicy::kCab,
                                    cab::EvictPolicy::kSnapKV}) {
      cab::EvictInputs in;
      in.keys = &kv;
      in.window = &wv;
      in.scores = &sv;
      cab::EvictParams p;
      p.policy = policy;
      p.keep = n / 10;
      p.block_size = 64;
      cab::KeepIndices g, c;
      const double gpu_ms = TimeEvict(**gpu, in, p, iters, &g);
      const double cpu_ms = TimeEvict(*cpu, in, p, std::min(iters, 3), &c);
      int same = 0;
      for (int h = 0; h < B * Hkv; ++h) {
        same += std::equal(g.Row(0, h), g.Row(0, h) + g.per_head, c.Row(0, h));
      }
      char row[256];
      std::snprintf(row, sizeof(row), "| %lld | %s | %.3f | %.3f | %.1fx | %d/%d |\n", static_cast<long long>(n),
                    cab::Name(policy).c_str(), gpu_ms, cpu_ms, cpu_ms / gpu_ms, same, B * Hkv);
      table += row;
      std::fputs(row, stderr);
    }
  }
  std::fputs(table.c_str(), stdout);
  if (!out_path.empty()) {
    if (FILE* f = std::fopen(out_path.c_str(), "w")) {
      std::fputs(table.c_str(), f);
      std::fclose(f);
    }
  }
  return 0;
}
