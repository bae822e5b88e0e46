#include "cpu_backend_predict.h"

#include <chrono>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "select.h"

namespace cab::cpu {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

absl::Status CheckCoarse(const CoarseBlocks& c, const char* name) {
  for (auto [v, field] : {std::pair{c.batch, "batch"}, {c.heads, "heads"}, {c.blocks, "blocks"}, {c.dim, "dim"},
                          {c.block_size, "block_size"}}) {
    if (v <= 0) return absl::InvalidArgumentError(absl::StrCat(name, ".", field, ": ", v, " must be > 0"));
  }
  if (c.blocks > kMaxBlocks) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".blocks: ", c.blocks, " exceeds the CPU backend's limit of ",
                                                   kMaxBlocks));
  }
  const size_t want = static_cast<size_t>(c.batch) * c.heads * c.blocks * c.dim;
  for (auto [v, field] : {std::pair{&c.maxl2, "maxl2"}, {&c.mean, "mean"}, {&c.kmin, "kmin"}, {&c.kmax, "kmax"}}) {
    if (v->size() != want) {
      return absl::InvalidArgumentError(absl::StrCat(name, ".", field, ": has ", v->size(),
                                                     " floats, expected batch*heads*blocks*dim = ", want));
    }
  }
  return absl::OkStatus();
}

// The mask rows of one (batch, query head), flattened.
struct HeadRows {
  std::vector<int64_t> counts;  // per answered row
  std::vector<int32_t> cols;
  HeadDiagnostics diagnostics;
  double graph_seconds = 0, select_seconds = 0;
};

}  // namespace

absl::Status CheckCoarsePair(const CoarseBlocks& q, const CoarseBlocks& k) {
  if (auto s = CheckCoarse(q, "q"); !s.ok()) return s;
  if (auto s = CheckCoarse(k, "k"); !s.ok()) return s;
  return CheckCoarseShapes({q.batch, q.heads, q.blocks, q.dim, q.block_size},
                           {k.batch, k.heads, k.blocks, k.dim, k.block_size});
}

absl::Status CheckCoarseShapes(const CoarseShape& q, const CoarseShape& k) {
  for (auto [a, b, field] : {std::tuple{q.batch, k.batch, "batch"}, {q.blocks, k.blocks, "blocks"},
                             {q.dim, k.dim, "dim"}, {q.block_size, k.block_size, "block_size"}}) {
    if (a != b) {
      return absl::InvalidArgumentError(absl::StrCat("k.", field, ": ", b, " does not match q.", field, " (", a, ")"));
    }
  }
  if (q.heads % k.heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("q.heads: ", q.heads, " is not a multiple of k.heads (", k.heads, ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckPolicyRange(const MaskParams& p) {
  if (static_cast<int>(p.policy) < 0 || static_cast<int>(p.policy) > static_cast<int>(MaskPolicy::kAdaptive)) {
    return absl::InvalidArgumentError(absl::StrCat("policy: unknown mask policy ", static_cast<int>(p.policy)));
  }
  return absl::OkStatus();
}

absl::Status CheckRows(const MaskParams& p, int blocks) {
  if (p.row_begin >= blocks) {
    return absl::InvalidArgumentError(absl::StrCat("row_begin: ", p.row_begin, " must be < the number of blocks (", blocks, ")"));
  }
  if (p.row_end > blocks) {
    return absl::InvalidArgumentError(absl::StrCat("row_end: ", p.row_end, " exceeds the number of blocks (", blocks, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<MaskResult> PredictMaskCpu(const CoarseBlocks& q, const CoarseBlocks& k, const MaskParams& p,
                                          bool diagnostics, ThreadPool& pool) {
  if (auto s = CheckPolicyRange(p); !s.ok()) return s;
  if (auto s = p.Validate(); !s.ok()) return s;
  if (auto s = CheckCoarsePair(q, k); !s.ok()) return s;
  const int m = q.blocks;
  if (auto s = CheckRows(p, m); !s.ok()) return s;
  const int row_begin = p.row_begin, row_end = p.row_end < 0 ? m : p.row_end, rows = row_end - row_begin;

  const GraphNeed need = NeedOf(p.policy);
  const GraphParams selection_graph = SelectionGraphParams(p);
  const int64_t items = static_cast<int64_t>(q.batch) * q.heads;
  std::vector<HeadRows> heads(items);
  std::mutex error_mu;
  absl::Status error;
  const auto fail = [&](const absl::Status& s) {
    std::lock_guard<std::mutex> lock(error_mu);
    if (error.ok()) error = s;
  };

  const auto start = Clock::now();
  pool.ParallelFor(items, [&](int64_t item) {
    const int b = static_cast<int>(item / q.heads), h = static_cast<int>(item % q.heads);
    HeadRows& out = heads[item];
    auto t0 = Clock::now();
    std::optional<HeadGraph> graph;
    if (need != GraphNeed::kNone) {
      auto g = need == GraphNeed::kFull ? BuildHeadGraphCpu(q, k, b, h, p.query_coarsening, selection_graph)
                                        : BuildHeadAffinityCpu(q, k, b, h, p.query_coarsening, selection_graph);
      if (!g.ok()) return fail(g.status());
      graph = std::move(*g);
    }
    if (diagnostics) {
      // Curvature statistics describe the request's graph; reuse the selection graph when it is that one.
      if (need == GraphNeed::kFull && selection_graph.estimator == p.graph.estimator) {
        out.diagnostics.curvature = SummarizeCurvature(*graph);
      } else {
        auto g = BuildHeadGraphCpu(q, k, b, h, p.query_coarsening, p.graph);
        if (!g.ok()) return fail(g.status());
        out.diagnostics.curvature = SummarizeCurvature(*g);
      }
    }
    out.graph_seconds = Since(t0);

    t0 = Clock::now();
    HeadSelectInput in{&p, graph ? &*graph : nullptr, m, b, h};
    std::vector<int32_t> row_cols;
    out.counts.resize(rows);
    double candidates = 0;
    for (int r = 0; r < rows; ++r) {
      SelectRow(in, row_begin + r, row_cols);
      out.counts[r] = static_cast<int64_t>(row_cols.size());
      out.cols.insert(out.cols.end(), row_cols.begin(), row_cols.end());
      candidates += CandidateCount(p, m, row_begin + r);
    }
    out.diagnostics.density = candidates > 0 ? out.cols.size() / candidates : 0.0;
    out.select_seconds = Since(t0);
  });
  if (!error.ok()) return error;
  const double parallel_wall = Since(start);

  const auto assemble_start = Clock::now();
  MaskResult result;
  BlockMask& mask = result.mask;
  mask.batch = q.batch;
  mask.heads = q.heads;
  mask.row_begin = row_begin;
  mask.rows = rows;
  mask.cols = m;
  mask.row_offsets.reserve(items * rows + 1);
  mask.row_offsets.push_back(0);
  size_t total = 0;
  for (const auto& head : heads) total += head.cols.size();
  mask.col_indices.reserve(total);
  double graph_sum = 0, select_sum = 0;
  for (auto& head : heads) {
    for (int64_t count : head.counts) mask.row_offsets.push_back(mask.row_offsets.back() + count);
    mask.col_indices.insert(mask.col_indices.end(), head.cols.begin(), head.cols.end());
    graph_sum += head.graph_seconds;
    select_sum += head.select_seconds;
    if (diagnostics) result.diagnostics.heads.push_back(head.diagnostics);
    head = HeadRows{};  // release as we go
  }
  if (diagnostics) {
    result.diagnostics.density = mask.Density(p.graph.causal);
    result.diagnostics.prediction_flops = PredictionFlops(q.tokens, m, q.dim, q.batch * q.heads, p.graph.degree);
  }
  // The stages overlap across threads: split the parallel wall time by their summed thread time.
  const double share = graph_sum + select_sum > 0 ? graph_sum / (graph_sum + select_sum) : 0.0;
  result.graph_seconds = parallel_wall * share;
  result.select_seconds = parallel_wall * (1.0 - share) + Since(assemble_start);
  return result;
}

}  // namespace cab::cpu
