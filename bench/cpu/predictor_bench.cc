// Speed of the CPU predictor (the reference backend): coarsening Q/K, PredictMask for each policy at
// several sequence lengths, and eviction. Inputs are seeded random fp32 tensors with B = 1, H = 8,
// D = 128, blocks of 64 (the DESIGN figures use H = 32 on a GPU; the CPU reference is not expected to
// meet them). Counters: blocks M, and the FLOP estimate (without coarsening) as a rate.
#include <map>
#include <memory>
#include <random>

#include "benchmark/benchmark.h"
#include "cab/backend.h"

namespace cab {
namespace {

constexpr int kHeads = 8, kDim = 128, kBlock = 64;

FloatTensor RandomFloats(std::vector<int64_t> shape, uint32_t seed) {
  FloatTensor t;
  t.shape = std::move(shape);
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  t.data.resize(n);
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (float& v : t.data) v = dist(rng);
  return t;
}

Backend& SharedBackend() {
  static std::unique_ptr<Backend> backend = MakeCpuBackend();
  return *backend;
}

struct Inputs {
  FloatTensor q, k, scores;
  CoarseBlocks qc, kc;
};

// One set of inputs per N, built on first use and kept for the other benchmarks.
const Inputs& InputsFor(int64_t n) {
  static std::map<int64_t, std::unique_ptr<Inputs>> cache;
  auto& slot = cache[n];
  if (!slot) {
    slot = std::make_unique<Inputs>();
    slot->q = RandomFloats({1, kHeads, n, kDim}, 1);
    slot->k = RandomFloats({1, kHeads, n, kDim}, 2);
    slot->scores = RandomFloats({1, kHeads, n}, 3);
    slot->qc = *SharedBackend().Coarsen(slot->q.view(), kBlock);
    slot->kc = *SharedBackend().Coarsen(slot->k.view(), kBlock);
  }
  return *slot;
}

void BM_Coarsen(benchmark::State& state) {
  const Inputs& in = InputsFor(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(SharedBackend().Coarsen(in.q.view(), kBlock));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(in.q.data.size() * sizeof(float)));
}
BENCHMARK(BM_Coarsen)->Arg(4096)->Arg(16384)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_PredictMask(benchmark::State& state) {
  const Inputs& in = InputsFor(state.range(0));
  MaskParams p;
  p.policy = static_cast<MaskPolicy>(state.range(1));
  p.sparsity = 0.95f;
  for (auto _ : state) {
    auto r = SharedBackend().PredictMask(in.qc, in.kc, p, false);
    if (!r.ok()) state.SkipWithError(std::string(r.status().message()).c_str());
    benchmark::DoNotOptimize(r);
  }
  state.SetLabel(Name(p.policy));
  state.counters["blocks"] = in.qc.blocks;
  if (p.policy == MaskPolicy::kStreaming) return;  // no graph: the FLOP estimate does not apply
  state.counters["flops"] = benchmark::Counter(
      // tokens = 0: coarsening is not part of PredictMask (BM_Coarsen times it).
      PredictionFlops(0, in.qc.blocks, kDim, kHeads, p.graph.degree) * state.iterations(),
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PredictMask)
    ->ArgsProduct({{4096, 16384, 65536},
                   {static_cast<int>(MaskPolicy::kCab), static_cast<int>(MaskPolicy::kMagnitude),
                    static_cast<int>(MaskPolicy::kQuest), static_cast<int>(MaskPolicy::kStreaming),
                    static_cast<int>(MaskPolicy::kAdaptive)}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Evict(benchmark::State& state) {
  const Inputs& in = InputsFor(state.range(0));
  EvictParams p;
  p.policy = static_cast<EvictPolicy>(state.range(1));
  p.keep = state.range(0) / 10;
  const TensorView scores = in.scores.view(), keys = in.k.view();
  for (auto _ : state) {
    auto r = SharedBackend().Evict(EvictInputs{state.range(0), &scores, &keys, nullptr, 0, 0}, p);
    if (!r.ok()) state.SkipWithError(std::string(r.status().message()).c_str());
    benchmark::DoNotOptimize(r);
  }
  state.SetLabel(Name(p.policy));
}
BENCHMARK(BM_Evict)
    ->ArgsProduct({{4096, 16384}, {static_cast<int>(EvictPolicy::kH2O), static_cast<int>(EvictPolicy::kCab)}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace cab
