#include "mask_compute.h"

#include <chrono>
#include <new>

#include "absl/strings/str_cat.h"
#include "wire/mask_codec.h"

namespace cab::server {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

absl::Status Guarded(const std::function<absl::Status()>& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of memory while computing this request; send fewer tokens or heads");
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("compute failed: ", e.what()));
  }
}

absl::StatusOr<CoarsePair> CoarsenInputs(const PredictInputs& in, cab::Backend& backend) {
  CoarsePair out;
  absl::Status st = Guarded([&]() -> absl::Status {
    auto q = backend.Coarsen(in.q, in.block_size);
    if (!q.ok()) return absl::Status(q.status().code(), absl::StrCat("q: ", q.status().message()));
    auto k = backend.Coarsen(in.k, in.block_size);
    if (!k.ok()) return absl::Status(k.status().code(), absl::StrCat("k: ", k.status().message()));
    out.q = std::move(*q);
    out.k = std::move(*k);
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return out;
}

namespace {

// The predict stage (`predict`), then the mask in `format` and the diagnostics.
absl::Status PredictAndEncodeWith(const std::function<absl::StatusOr<cab::MaskResult>()>& predict,
                                  const cab::MaskParams& params, cab::v1::MaskFormat format, bool diagnostics,
                                  const StageHooks& hooks, cab::v1::BlockMask* mask, cab::v1::Diagnostics* diag,
                                  cab::v1::Timings* timings) {
  cab::MaskResult result;
  auto t0 = std::chrono::steady_clock::now();
  absl::Status st = Guarded([&]() -> absl::Status {
    auto r = predict();
    if (!r.ok()) return r.status();
    result = std::move(*r);
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  // Representatives taken in inside the call count as the coarsen stage.
  timings->set_predict_seconds(SecondsSince(t0) - result.coarsen_seconds);
  if (result.coarsen_seconds > 0) {
    timings->set_coarsen_seconds(result.coarsen_seconds);
    hooks.Observe(Stage::kCoarsen, result.coarsen_seconds);
  }
  hooks.Observe(Stage::kCurvature, result.graph_seconds);
  hooks.Observe(Stage::kSelect, result.select_seconds);
  if (auto s = hooks.Check(); !s.ok()) return s;

  auto t1 = std::chrono::steady_clock::now();
  st = Guarded([&]() -> absl::Status {
    if (auto s = wire::EncodeMask(result.mask, format, params.graph.causal, mask); !s.ok()) return s;
    if (diagnostics) {
      diag->Clear();
      for (const cab::HeadDiagnostics& h : result.diagnostics.heads) {
        cab::v1::HeadDiagnostics* out = diag->add_heads();
        out->set_curvature_min(h.curvature.min);
        out->set_curvature_mean(h.curvature.mean);
        out->set_curvature_max(h.curvature.max);
        out->set_negative_edge_share(h.curvature.negative_share);
        out->set_edges(h.curvature.edges);
        out->set_density(h.density);
      }
      diag->set_density(result.diagnostics.density);
      diag->set_prediction_flops(result.diagnostics.prediction_flops);
    }
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  const double encode = SecondsSince(t1);
  timings->set_encode_seconds(encode);
  hooks.Observe(Stage::kEncode, encode);
  return absl::OkStatus();
}

}  // namespace

absl::Status PredictAndEncode(const cab::CoarseBlocks& q, const cab::CoarseBlocks& k, const cab::MaskParams& params,
                              cab::v1::MaskFormat format, bool diagnostics, cab::Backend& backend,
                              const StageHooks& hooks, cab::v1::BlockMask* mask, cab::v1::Diagnostics* diag,
                              cab::v1::Timings* timings, const cab::CallContext& call) {
  return PredictAndEncodeWith([&] { return backend.PredictMask(q, k, params, diagnostics, call); }, params, format,
                              diagnostics, hooks, mask, diag, timings);
}

absl::Status PredictRepresentativesAndEncode(const PredictInputs& in, cab::Backend& backend, const StageHooks& hooks,
                                             cab::v1::BlockMask* mask, cab::v1::Diagnostics* diag,
                                             cab::v1::Timings* timings) {
  cab::RepresentativeInputs reps;
  reps.q = in.q;
  reps.k = in.k;
  reps.kmin = in.k_min ? &*in.k_min : nullptr;
  reps.kmax = in.k_max ? &*in.k_max : nullptr;
  reps.block_size = in.block_size;
  reps.tokens = in.tokens;
  return PredictAndEncodeWith(
      [&] { return backend.PredictMaskFromRepresentatives(reps, in.params, in.diagnostics, cab::CallContext{}); },
      in.params, in.format, in.diagnostics, hooks, mask, diag, timings);
}

}  // namespace cab::server
