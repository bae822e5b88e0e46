// Kernel time of the CUDA predictor on device-resident Q and K (SPEC 1-3, policy cab), with CUDA
// events: coarsening of Q and K, scores (cuBLAS), top lists (softmax + top-r fused), graph (edges +
// degrees), curvature + selection. Median of many runs after warm-up; random bf16 inputs regenerated
// per size (never zeros). Prints a markdown table and, with --out=FILE, writes it there too.
// The coarsening pass also writes the representatives in bf16 (exact: they are bf16 input tokens),
// which the score GEMM reads directly, as cab eviction on the device does (device_evictor.cc); Q and K
// are coarsened in one launch (LaunchCoarsenPair) and, for cab, without fp32 copies nobody reads.
//
// The key pass computes Quest's channel bounds only where the policy reads them (quest), as the
// PyTorch peer does; --k_bounds=on times them anyway (a server session keeps them for every policy).
// The "pipelined ms" column: the same prediction by the plugin's PipelinedPredictor
// (pipelined_predictor.h): the coarsening as one launch on --pipelined_sms SMs (default 64) that
// counts each of --pipelined=G head groups (default 8; 0: column not run) as it finishes, each
// group predicted as soon as it is coarsened, on --pipelined_streams streams (2), the last groups
// small with --pipelined_taper=1, no L2 evict-first hint with --pipelined_evict=0 (PipelineOptions); its mask is checked against the sequential run's
// (the line after the table says whether every size gave the identical mask).
//
// --pipeline=G (an experiment, timing only; the predecessor of PipelinedPredictor): heads in G groups, each group's coarsening on a second
// stream and its prediction on the predictor's stream after it, so that coarsening of group g + 1
// can run beside the prediction of group g; --coarsen_ctas=C leaves room on each SM for that.
// --claim=on makes the coarsening's warps claim blocks from a counter (CoarsenArgs::work_counter)
// instead of a fixed share (auto: on with --pipeline > 1). --green_sms=N runs the coarsening on a
// stream limited to N SMs (a green context, sm_partition.h), the rest left to the prediction.
// --one_launch (with --pipeline): one coarsening launch streams the groups in order and counts each
// group's finished blocks; the prediction stream waits on those counts (stream_wait.h).
// --pred_rest (with --green_sms): the prediction on the SMs the coarsening does not have.
// --persist_mib=N (with --pipeline): N MiB of L2 set aside for the score matrix, which the prediction
// stream marks persisting (cudaAccessPolicyWindow), so the coarsening's stream does not evict it.
// --head_groups=A,B,... (instead of --pipeline=G; needs --one_launch): groups of unequal head
// counts, e.g. 8,8,8,4,2,1,1: large groups early (their predictions are efficient), small ones last
// (the prediction after the last coarsened block is short).
// --pred_streams=N (with --one_launch): group g's prediction on predictor g % N, each with its own
// stream, so that a group's prediction need not wait for the one before it.
// --pred=WHAT (with --pipeline; a diagnostic of what slows the overlapped coarsening): what each
// group's prediction does: full (default), graph (no selection), scores (the score GEMM only),
// spin:US (a kernel on every SM that only counts clock cycles for US microseconds: no memory
// traffic), none (nothing: the coarsening in parts alone) or nowait (nor the waits on the parts).
//
//   cab-bench-gpu [--n=4096,16384,65536,131072] [--blocks=64,128] [--heads=32] [--dim=128]
//                 [--sparsity=0.95] [--policy=cab] [--iters=30] [--warmup=5] [--gemm=auto] [--out=FILE]
//                 [--k_bounds=auto|on|off] [--pipeline=1] [--coarsen_ctas=0] [--claim=auto|on|off] [--green_sms=0] [--one_launch] [--pred_rest] [--persist_mib=0]
//                 [--head_groups=A,B,...] [--pred_streams=1] [--pred=full|graph|scores|spin:US|none|nowait]
//                 [--pipelined=8] [--pipelined_sms=64] [--pipelined_streams=2] [--pipelined_taper=0] [--pipelined_evict=1]
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "coarsen_kernel.h"
#include "cuda_status.h"
#include "device_predictor.h"
#include "pipelined_predictor.h"
#include "sm_partition.h"
#include "stream_wait.h"

namespace {

using cab::cuda::DevicePredictor;

#define CHECK_OK(expr)                                                              \
  do {                                                                              \
    absl::Status _s = (expr);                                                       \
    if (!_s.ok()) {                                                                 \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, _s.ToString().c_str()); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)
#define CHECK_CUDA(expr) CHECK_OK(::cab::cuda::CudaStatus((expr), #expr))

// Hash-based normal-ish values in bf16 (sum of uniforms), a few tokens scaled up as "needles".
__global__ void FillKernel(__nv_bfloat16* x, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = ((z & 0xffff) + ((z >> 16) & 0xffff) + ((z >> 32) & 0xffff) - 98302.5f) / 37837.f;
    x[i] = __float2bfloat16(u);
  }
}

std::vector<int> ParseList(const char* s) {
  std::vector<int> out;
  while (*s) {
    out.push_back(std::atoi(s));
    const char* c = std::strchr(s, ',');
    if (!c) break;
    s = c + 1;
  }
  return out;
}

// --pred=spin:US: busy for `cycles` clock cycles and touches no memory (but one store nobody reads
// when the loop runs an odd number of times, so it is not removed).
__global__ void SpinKernel(long long cycles, int* sink) {
  const long long start = clock64();
  int n = 0;
  while (clock64() - start < cycles) ++n;
  if (n == -1) *sink = n;
}

float Median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.f : (v.size() % 2 ? v[v.size() / 2] : 0.5f * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> ns = {4096, 16384, 65536, 131072}, blocks = {64, 128}, head_groups;
  int heads = 32, dim = 128, iters = 30, warmup = 5, pipeline = 1, coarsen_ctas = 0, green_sms = 0, persist_mib = 0,
      pred_streams = 1, pipelined = 8, pipelined_sms = 64, pipelined_streams = 2, pipelined_taper = 0,
      pipelined_evict = 1;
  std::string k_bounds = "auto", claim = "auto";
  bool one_launch = false, pred_rest = false;
  float sparsity = 0.95f;
  std::string policy = "cab", gemm = "auto", out_path, pred_what = "full";
  for (int a = 1; a < argc; ++a) {
    const char* s = argv[a];
    auto val = [&](const char* key) -> const char* {
      const size_t n = std::strlen(key);
      return std::strncmp(s, key, n) == 0 ? s + n : nullptr;
    };
    if (const char* v = val("--n=")) ns = ParseList(v);
    else if (const char* v = val("--blocks=")) blocks = ParseList(v);
    else if (const char* v = val("--heads=")) heads = std::atoi(v);
    else if (const char* v = val("--dim=")) dim = std::atoi(v);
    else if (const char* v = val("--sparsity=")) sparsity = std::atof(v);
    else if (const char* v = val("--policy=")) policy = v;
    else if (const char* v = val("--iters=")) iters = std::atoi(v);
    else if (const char* v = val("--warmup=")) warmup = std::atoi(v);
    else if (const char* v = val("--gemm=")) gemm = v;
    else if (const char* v = val("--out=")) out_path = v;
    else if (const char* v = val("--k_bounds=")) k_bounds = v;
    else if (const char* v = val("--pipeline=")) pipeline = std::atoi(v);
    else if (const char* v = val("--coarsen_ctas=")) coarsen_ctas = std::atoi(v);
    else if (const char* v = val("--claim=")) claim = v;
    else if (const char* v = val("--green_sms=")) green_sms = std::atoi(v);
    else if (std::strcmp(s, "--one_launch") == 0) one_launch = true;
    else if (std::strcmp(s, "--pred_rest") == 0) pred_rest = true;
    else if (const char* v = val("--persist_mib=")) persist_mib = std::atoi(v);
    else if (const char* v = val("--pred=")) pred_what = v;
    else if (const char* v = val("--head_groups=")) head_groups = ParseList(v);
    else if (const char* v = val("--pred_streams=")) pred_streams = std::atoi(v);
    else if (const char* v = val("--pipelined=")) pipelined = std::atoi(v);
    else if (const char* v = val("--pipelined_sms=")) pipelined_sms = std::atoi(v);
    else if (const char* v = val("--pipelined_streams=")) pipelined_streams = std::atoi(v);
    else if (const char* v = val("--pipelined_taper=")) pipelined_taper = std::atoi(v);
    else if (const char* v = val("--pipelined_evict=")) pipelined_evict = std::atoi(v);
    else { std::fprintf(stderr, "unknown argument %s\n", s); return 2; }
  }
  cab::cuda::GemmPolicy gp = cab::cuda::GemmPolicy::kAuto;
  if (gemm == "fp32") gp = cab::cuda::GemmPolicy::kFp32;
  if (gemm == "tf32") gp = cab::cuda::GemmPolicy::kTf32;
  if (gemm == "bf16") gp = cab::cuda::GemmPolicy::kBf16;
  auto parsed_policy = cab::ParseMaskPolicy(policy);
  CHECK_OK(parsed_policy.status());
  if (pipeline < 1 || heads % pipeline != 0) {
    std::fprintf(stderr, "--pipeline=%d must divide --heads=%d\n", pipeline, heads);
    return 2;
  }
  if (head_groups.empty()) {
    head_groups.assign(pipeline, heads / pipeline);
  } else {
    int sum = 0;
    for (int h : head_groups) sum += h > 0 ? h : heads + 1;
    if (sum != heads || !one_launch || head_groups.size() > cab::cuda::CoarsenArgs::kMaxParts) {
      std::fprintf(stderr, "--head_groups must be positive, add up to --heads, at most 32, with --one_launch\n");
      return 2;
    }
    pipeline = static_cast<int>(head_groups.size());
  }
  const bool spin = pred_what.rfind("spin:", 0) == 0;
  if (pred_what != "full" && pred_what != "graph" && pred_what != "scores" && pred_what != "none" && pred_what != "nowait" && !spin) {
    std::fprintf(stderr, "--pred=%s: expected full, graph, scores, spin:US, none or nowait\n", pred_what.c_str());
    return 2;
  }
  const bool with_bounds = k_bounds == "on" || (k_bounds == "auto" && *parsed_policy == cab::MaskPolicy::kQuest);
  // The score GEMM reads the bf16 representatives that coarsening writes; the fp32 copies are
  // written only for policies whose scores read them (quest's bounds).
  const bool bf16_scores_only = !with_bounds && (*parsed_policy == cab::MaskPolicy::kCab ||
                                                 *parsed_policy == cab::MaskPolicy::kMagnitude ||
                                                 *parsed_policy == cab::MaskPolicy::kAdaptive);

  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  auto pred_or = DevicePredictor::Create(0, gp);
  CHECK_OK(pred_or.status());
  DevicePredictor& pred = **pred_or;
  if (pred_streams < 1 || (pred_streams > 1 && !one_launch)) {
    std::fprintf(stderr, "--pred_streams=%d: at least 1, more only with --one_launch\n", pred_streams);
    return 2;
  }
  std::vector<std::unique_ptr<DevicePredictor>> more_preds;  // --pred_streams: predictors 1..N-1
  for (int i = 1; i < pred_streams; ++i) {
    auto made = DevicePredictor::Create(0, gp);
    CHECK_OK(made.status());
    more_preds.push_back(std::move(*made));
  }
  // The pipelined column: with the default flags only (the experiment's flags time other orders),
  // for policies whose scores come from the bf16 representatives.
  std::unique_ptr<cab::cuda::PipelinedPredictor> piped;
  if (pipelined > 0 && pipeline == 1 && green_sms == 0 && pred_what == "full" && bf16_scores_only) {
    auto made = cab::cuda::PipelinedPredictor::Create(&pred, {pipelined, pipelined_sms, pipelined_streams, pipelined_taper != 0, pipelined_evict != 0});
    if (made.ok()) {
      piped = std::move(*made);
    } else {
      std::fprintf(stderr, "pipelined column not run: %s\n", made.status().ToString().c_str());
    }
  }
  bool piped_masks_identical = true;
  cudaStream_t stream = pred.stream();  // (--pred_rest replaces it below)
  cudaEvent_t e0, e1, e2;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  CHECK_CUDA(cudaEventCreate(&e2));
  cudaStream_t side;  // --pipeline or --green_sms: the coarsening stream
  CHECK_CUDA(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  cab::cuda::PartitionStream part, rest;
  if (green_sms > 0) {
    auto made = cab::cuda::CreatePartitionStream(0, green_sms, pred_rest ? &rest : nullptr);
    CHECK_OK(made.status());
    part = *made;
    side = part.stream;
    std::printf("coarsening on %d SMs (asked %d)\n", part.sms, green_sms);
    if (pred_rest) {
      pred.UseStream(rest.stream);
      stream = rest.stream;
      std::printf("prediction on the other %d SMs\n", rest.sms);
    }
  }
  std::vector<cudaEvent_t> group_done(pipeline);
  for (auto& e : group_done) CHECK_CUDA(cudaEventCreate(&e));
  std::vector<cudaEvent_t> group_predicted(pipeline);  // --pipeline: per group, when its prediction ended
  for (auto& e : group_predicted) CHECK_CUDA(cudaEventCreate(&e));
  const bool claim_blocks = claim == "on" || (claim == "auto" && pipeline > 1);
  uint32_t* work_counter = nullptr;  // zeroed once; each launch leaves it zeroed
  CHECK_CUDA(cudaMalloc(&work_counter, 2 * sizeof(uint32_t)));
  CHECK_CUDA(cudaMemset(work_counter, 0, 2 * sizeof(uint32_t)));
  uint32_t* group_counts = nullptr;  // --one_launch: finished blocks per group
  CHECK_CUDA(cudaMalloc(&group_counts, pipeline * sizeof(uint32_t)));
  CHECK_CUDA(cudaMemset(group_counts, 0, pipeline * sizeof(uint32_t)));

  cab::cuda::DeviceBuffer group_scores;  // --pred=scores
  cab::cuda::CausalScorePlan group_plan;
  int* spin_sink = nullptr;  // --pred=spin
  int clock_khz = 0;
  CHECK_CUDA(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
  CHECK_CUDA(cudaMalloc(&spin_sink, sizeof(int)));

  std::string table;
  char line[512];
  std::snprintf(line, sizeof(line),
                "# cab-bench-gpu on %s: B=1, H=%d, D=%d, bf16, policy %s, sparsity %.2f, gemm %s, key bounds %s, "
                "pipeline %d (coarsen CTAs/SM %d, claimed blocks %s), median of %d after %d warm-up\n\n"
                "| N | block | M | total ms | pipelined ms | coarsen Q+K ms | scores ms | top lists ms | graph ms | select ms | kept/row (last) |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|\n",
                prop.name, heads, dim, policy.c_str(), sparsity, gemm.c_str(), with_bounds ? "on" : "off", pipeline,
                coarsen_ctas, claim_blocks ? "on" : "off", iters, warmup);
  table += line;
  std::printf("%s", line);
  std::fflush(stdout);

  for (int n : ns) {
    const size_t elems = static_cast<size_t>(heads) * n * dim;
    __nv_bfloat16 *q = nullptr, *k = nullptr;
    CHECK_CUDA(cudaMalloc(&q, elems * 2));
    CHECK_CUDA(cudaMalloc(&k, elems * 2));
    FillKernel<<<4096, 256, 0, stream>>>(q, elems, 0x1234 + n);
    FillKernel<<<4096, 256, 0, stream>>>(k, elems, 0x5678 + n);
    CHECK_CUDA(cudaGetLastError());
    for (int block : blocks) {
      const int M = (n + block - 1) / block;
      const size_t celems = static_cast<size_t>(heads) * M * dim;
      float *qc, *kc, *kmin, *kmax;
      __nv_bfloat16 *qc16, *kc16;  // the representatives again in bf16, written by the coarsening pass
      CHECK_CUDA(cudaMalloc(&qc16, celems * 2));
      CHECK_CUDA(cudaMalloc(&kc16, celems * 2));
      CHECK_CUDA(cudaMalloc(&qc, celems * 4));
      CHECK_CUDA(cudaMalloc(&kc, celems * 4));
      CHECK_CUDA(cudaMalloc(&kmin, celems * 4));
      CHECK_CUDA(cudaMalloc(&kmax, celems * 4));
      cab::cuda::CoarsenArgs qa, ka;
      qa.x = q;
      qa.dtype = cab::DType::kBF16;
      qa.batch = 1;
      qa.heads = heads;
      qa.dim = dim;
      qa.block_size = block;
      qa.tokens = n;
      qa.maxl2 = bf16_scores_only ? nullptr : qc;  // the query side needs only its representative
      qa.maxl2_bf16 = qc16;
      ka = qa;
      ka.x = k;
      ka.maxl2 = bf16_scores_only ? nullptr : kc;
      ka.maxl2_bf16 = kc16;
      if (with_bounds) {  // Quest's bounds come from the same pass
        ka.kmin = kmin;
        ka.kmax = kmax;
      }
      qa.max_ctas_per_sm = ka.max_ctas_per_sm = coarsen_ctas;
      qa.work_counter = ka.work_counter = claim_blocks ? work_counter : nullptr;
      cab::cuda::PredictorInputs in;
      in.batch = 1;
      in.q_heads = heads;
      in.kv_heads = heads;
      in.blocks = M;
      in.dim = dim;
      in.q_rep = bf16_scores_only ? nullptr : qc;
      in.k_feature = bf16_scores_only ? nullptr : kc;
      if (with_bounds) {
        in.kmin = kmin;
        in.kmax = kmax;
      }
      in.bf16_exact = true;  // max-L2 representatives of bf16 inputs are bf16 values
      in.q_rep_bf16 = qc16;
      in.k_feature_bf16 = kc16;
      cab::MaskParams p;
      p.policy = *parsed_policy;
      p.sparsity = sparsity;

      std::vector<float> total, coarsen, stage[cab::cuda::kStageCount];
      for (int it = 0; pipeline > 1 && it < warmup + iters; ++it) {
        // Group g's coarsening on `side` (one launch per group, or --one_launch for all with counts
        // per group), its prediction on the predictor's stream after it.
        CHECK_CUDA(cudaEventRecord(e0, stream));
        CHECK_CUDA(cudaStreamWaitEvent(side, e0, 0));
        for (auto& extra : more_preds) CHECK_CUDA(cudaStreamWaitEvent(extra->stream(), e0, 0));
        if (one_launch) {
          cab::cuda::CoarsenArgs qg = qa;
          qg.groups = pipeline;
          for (int grp = 0; grp < pipeline; ++grp) qg.part_rows[grp] = head_groups[grp];
          qg.group_done = group_counts;
          CHECK_OK(cab::cuda::LaunchCoarsenPair(qg, ka, side));
          CHECK_CUDA(cudaEventRecord(e1, side));
        }
        for (int grp = 0, h0 = 0; grp < pipeline; h0 += head_groups[grp], ++grp) {
          const int hg = head_groups[grp];
          DevicePredictor& gpred = grp % pred_streams == 0 ? pred : *more_preds[grp % pred_streams - 1];
          const cudaStream_t gstream = grp % pred_streams == 0 ? stream : gpred.stream();
          const size_t gel = static_cast<size_t>(h0) * M * dim, gx = static_cast<size_t>(h0) * n * dim;
          if (one_launch) {
            if (pred_what != "nowait") {
              CHECK_OK(cab::cuda::EnqueueWaitAtLeast(gstream, group_counts + grp, static_cast<uint32_t>(2 * hg * M)));
            }
            CHECK_CUDA(cudaEventRecord(group_done[grp], gstream));
          } else {
            cab::cuda::CoarsenArgs qg = qa, kg = ka;
            qg.heads = kg.heads = hg;
            qg.x = q + gx;
            kg.x = k + gx;
            qg.maxl2 = bf16_scores_only ? nullptr : qc + gel;
            kg.maxl2 = bf16_scores_only ? nullptr : kc + gel;
            qg.maxl2_bf16 = qc16 + gel;
            kg.maxl2_bf16 = kc16 + gel;
            if (with_bounds) {
              kg.kmin = kmin + gel;
              kg.kmax = kmax + gel;
            }
            CHECK_OK(cab::cuda::LaunchCoarsenPair(qg, kg, side));
            CHECK_CUDA(cudaEventRecord(group_done[grp], side));
            CHECK_CUDA(cudaStreamWaitEvent(stream, group_done[grp], 0));
          }
          cab::cuda::PredictorInputs ig = in;
          ig.q_heads = ig.kv_heads = hg;
          ig.q_rep = bf16_scores_only ? nullptr : qc + gel;
          ig.k_feature = bf16_scores_only ? nullptr : kc + gel;
          ig.q_rep_bf16 = qc16 + gel;
          ig.k_feature_bf16 = kc16 + gel;
          if (with_bounds) {
            ig.kmin = kmin + gel;
            ig.kmax = kmax + gel;
          }
          if (pred_what == "full" || pred_what == "graph") {
            CHECK_OK(gpred.Enqueue(ig, p, 0, M, pred_what == "graph"));
          } else if (pred_what == "scores") {
            cab::cuda::ScoreArgs sa;
            sa.batch = 1;
            sa.q_heads = sa.kv_heads = hg;
            sa.blocks = M;
            sa.dim = dim;
            sa.mode = cab::cuda::GemmMode::kBf16;
            sa.q16 = qc16 + gel;
            sa.k16 = kc16 + gel;
            sa.bf16_ready = true;
            CHECK_OK(group_scores.Reserve(static_cast<size_t>(hg) * M * M * sizeof(float)));
            sa.scores = group_scores.as<float>();
            CHECK_OK(cab::cuda::LaunchScores(gpred.cublas(), sa, gstream, &group_plan));
          } else if (spin) {
            SpinKernel<<<prop.multiProcessorCount, 32, 0, gstream>>>(
                static_cast<long long>(std::atof(pred_what.c_str() + 5) * clock_khz / 1000.0), spin_sink);
            CHECK_CUDA(cudaGetLastError());
          }
          CHECK_CUDA(cudaEventRecord(group_predicted[grp], gstream));
          if (persist_mib > 0 && it == 0 && grp == 0) {  // the score buffer exists now
            int most = 0;  // the device's largest set-aside (H100: 75% of L2)
            CHECK_CUDA(cudaDeviceGetAttribute(&most, cudaDevAttrMaxPersistingL2CacheSize, 0));
            const size_t bytes = std::min(static_cast<size_t>(persist_mib) << 20, static_cast<size_t>(most));
            CHECK_CUDA(cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, bytes));
            cudaStreamAttrValue attr = {};
            attr.accessPolicyWindow.base_ptr = const_cast<float*>(pred.graph().scores);
            attr.accessPolicyWindow.num_bytes = std::min(bytes, static_cast<size_t>(hg) * M * M * sizeof(float));
            attr.accessPolicyWindow.hitRatio = 1.f;
            attr.accessPolicyWindow.hitProp = cudaAccessPropertyPersisting;
            attr.accessPolicyWindow.missProp = cudaAccessPropertyStreaming;
            CHECK_CUDA(cudaStreamSetAttribute(stream, cudaStreamAttributeAccessPolicyWindow, &attr));
          }
        }
        for (int grp = 0; grp < pipeline; ++grp) {  // join the other prediction streams
          if (grp % pred_streams != 0) CHECK_CUDA(cudaStreamWaitEvent(stream, group_predicted[grp], 0));
        }
        if (one_launch) {  // (the waits already ordered this after the coarsening, except with nowait)
          CHECK_CUDA(cudaStreamWaitEvent(stream, e1, 0));
          CHECK_CUDA(cudaMemsetAsync(group_counts, 0, pipeline * sizeof(uint32_t), stream));
        }
        CHECK_CUDA(cudaEventRecord(e2, stream));
        CHECK_CUDA(cudaEventSynchronize(e2));
        float t = 0;
        CHECK_CUDA(cudaEventElapsedTime(&t, e0, e2));
        if (it >= warmup) total.push_back(t);
        if (it + 1 == warmup + iters) {  // the last run's timeline: when each group's stages ended
          float ce = 0;
          if (one_launch) CHECK_CUDA(cudaEventElapsedTime(&ce, e0, e1));
          std::printf("timeline (ms from start; coarsening ended %.3f), group: coarsened / predicted:", ce);
          for (int grp = 0; grp < pipeline; ++grp) {
            float c = 0, d = 0;
            CHECK_CUDA(cudaEventElapsedTime(&c, e0, group_done[grp]));
            CHECK_CUDA(cudaEventElapsedTime(&d, e0, group_predicted[grp]));
            std::printf(" %d: %.3f / %.3f;", grp, c, d);
          }
          std::printf("\n");
        }
      }
      for (int it = 0; pipeline == 1 && it < warmup + iters; ++it) {
        CHECK_CUDA(cudaEventRecord(e0, stream));
        if (green_sms > 0) {  // the coarsening alone on its partition
          CHECK_CUDA(cudaStreamWaitEvent(side, e0, 0));
          CHECK_OK(cab::cuda::LaunchCoarsenPair(qa, ka, side));
          CHECK_CUDA(cudaEventRecord(e1, side));
          CHECK_CUDA(cudaStreamWaitEvent(stream, e1, 0));
        } else {
          CHECK_OK(cab::cuda::LaunchCoarsenPair(qa, ka, stream));  // one launch where both fit it
          CHECK_CUDA(cudaEventRecord(e1, stream));
        }
        CHECK_OK(pred.Enqueue(in, p, 0, M, false));
        CHECK_CUDA(cudaEventRecord(e2, stream));
        CHECK_CUDA(cudaEventSynchronize(e2));
        auto ms = pred.StageMs();
        CHECK_OK(ms.status());
        float t = 0, c = 0;
        CHECK_CUDA(cudaEventElapsedTime(&t, e0, e2));
        CHECK_CUDA(cudaEventElapsedTime(&c, e0, e1));
        if (it < warmup) continue;
        total.push_back(t);
        coarsen.push_back(c);
        for (int s = 0; s < cab::cuda::kStageCount; ++s) stage[s].push_back((*ms)[s]);
      }
      cab::BlockMask mask;  // (--pred other than full leaves no mask)
      if (pred_what == "full") CHECK_OK(pred.DownloadMask(&mask));
      const int64_t last = mask.row_offsets.size() >= 2 ? mask.row_offsets[M] - mask.row_offsets[M - 1] : 0;
      std::vector<float> piped_total;
      if (piped) {
        for (int it = 0; it < warmup + iters; ++it) {
          CHECK_OK(piped->Enqueue(qa, ka, in, p, 0, M));
          CHECK_CUDA(cudaEventRecord(e2, stream));
          CHECK_CUDA(cudaEventSynchronize(e2));
          float t = 0;
          CHECK_CUDA(cudaEventElapsedTime(&t, piped->started(), e2));
          if (it >= warmup) piped_total.push_back(t);
        }
        float ce = 0;  // the last run's timeline
        CHECK_CUDA(cudaEventElapsedTime(&ce, piped->started(), piped->coarsened()));
        std::fprintf(stderr, "pipelined N=%d block %d, %d groups, coarsening on %d SMs: timeline (ms) coarsening ended %.3f, groups predicted:",
                     n, block, piped->groups(), piped->coarsen_sms(), ce);
        for (int grp = 0; grp < piped->groups(); ++grp) {
          float d = 0;
          CHECK_CUDA(cudaEventElapsedTime(&d, piped->started(), piped->predicted(grp)));
          std::fprintf(stderr, " %.3f", d);
        }
        std::fprintf(stderr, "\n");
        cab::BlockMask piped_mask;
        CHECK_OK(pred.DownloadMask(&piped_mask));
        const bool same = piped_mask.row_offsets == mask.row_offsets && piped_mask.col_indices == mask.col_indices;
        piped_masks_identical = piped_masks_identical && same;
        if (!same) std::fprintf(stderr, "pipelined N=%d block %d: mask differs from the sequential run's\n", n, block);
      }
      std::snprintf(line, sizeof(line), "| %d | %d | %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %lld |\n", n, block,
                    M, Median(total), Median(piped_total), Median(coarsen), Median(stage[0]), Median(stage[1]),
                    Median(stage[2]), Median(stage[3]), static_cast<long long>(last));
      table += line;
      std::printf("%s", line);
      std::fflush(stdout);
      cudaFree(qc);
      cudaFree(kc);
      cudaFree(kmin);
      cudaFree(kmax);
      cudaFree(qc16);
      cudaFree(kc16);
    }
    cudaFree(q);
    cudaFree(k);
  }
  if (piped) {
    std::snprintf(line, sizeof(line), "\npipelined masks identical to the sequential order's at every size: %s\n",
                  piped_masks_identical ? "yes" : "NO");
    table += line;
    std::printf("%s", line);
  }
  if (!out_path.empty()) {
    FILE* f = std::fopen(out_path.c_str(), "w");
    if (f) {
      std::fputs(table.c_str(), f);
      std::fclose(f);
    }
  }
  return 0;
}
