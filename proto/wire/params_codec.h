// Parameter codec: cab.v1 request parameters -> cab params with the documented defaults for unset
// fields, and back (clients build requests from cab params). Every error is INVALID_ARGUMENT and
// names the field as the client wrote it ("params.sparsity", "config.kv_heads", ...).
#pragma once

#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "cab/params.h"
#include "cab/tensor.h"
#include "cab/v1/cab.pb.h"

namespace cab::wire {

// Block sizes the service accepts (PredictRequest.block_size, SessionConfig.block_size).
inline constexpr int kMinBlockSize = 16;
inline constexpr int kMaxBlockSize = 1024;
absl::Status CheckBlockSize(int64_t block_size, absl::string_view field);

// Enum conversions; UNSPECIFIED maps to the default, values outside the enum are errors naming `field`.
absl::StatusOr<cab::MaskPolicy> FromProto(cab::v1::MaskPolicy v, absl::string_view field);
absl::StatusOr<cab::Estimator> FromProto(cab::v1::Estimator v, absl::string_view field);
absl::StatusOr<cab::CurvatureKind> FromProto(cab::v1::Curvature v, absl::string_view field);
absl::StatusOr<cab::Coarsening> FromProto(cab::v1::Coarsening v, absl::string_view field);
absl::StatusOr<cab::EvictPolicy> FromProto(cab::v1::EvictPolicy v, absl::string_view field);
cab::v1::MaskPolicy ToProto(cab::MaskPolicy v);
cab::v1::Estimator ToProto(cab::Estimator v);
cab::v1::Curvature ToProto(cab::CurvatureKind v);
cab::v1::Coarsening ToProto(cab::Coarsening v);
cab::v1::EvictPolicy ToProto(cab::EvictPolicy v);

// Parses a format name ("bsr", "bitmap", "flex") for CLIs.
absl::StatusOr<cab::v1::MaskFormat> ParseMaskFormat(const std::string& name);
std::string MaskFormatName(cab::v1::MaskFormat format);

// Names the service supports, for Info.
std::vector<std::string> MaskPolicyNames();
std::vector<std::string> EvictPolicyNames();
std::vector<std::string> EstimatorNames();
std::vector<std::string> CurvatureNames();
std::vector<std::string> MaskFormatNames();

// Mask parameters; `field` prefixes messages (for example "params" or "config.params").
// row_begin/row_end keep their defaults (the whole sequence): rows come from the request.
absl::StatusOr<cab::MaskParams> ToMaskParams(const cab::v1::MaskParams& p, absl::string_view field = "params");
// Every field written explicitly (optionals set), so the server sees exactly `p`.
void FromMaskParams(const cab::MaskParams& p, cab::v1::MaskParams* out);

// Eviction parameters of a request (the tensors are decoded separately). `keep` is checked here.
absl::StatusOr<cab::EvictParams> ToEvictParams(const cab::v1::EvictRequest& r);
void FromEvictParams(const cab::EvictParams& p, cab::v1::EvictRequest* out);

// A stream's fixed configuration, validated (limits are the server's business).
struct SessionSpec {
  int layers = 1;
  int heads = 0;           // Hq
  int kv_heads = 0;        // Hkv (config.kv_heads == 0 means Hkv = Hq)
  int head_dim = 0;        // D
  int block_size = 0;
  int batch = 1;           // config.batch == 0 means 1
  std::optional<cab::DType> dtype;  // unset: each chunk's tensors carry their own dtype
  cab::MaskParams params;
  cab::v1::MaskFormat format = cab::v1::MASK_FORMAT_BSR;
  bool representatives = false;
  std::string session_id;
};
absl::StatusOr<SessionSpec> ToSessionSpec(const cab::v1::SessionConfig& c);

// Query-block rows [row_begin, row_end) of a request against `blocks` (M); row_end == 0 means M.
// Errors name `field_prefix` + "row_begin" / "row_end". Fills p->row_begin / p->row_end.
absl::Status ApplyRows(int64_t row_begin, int64_t row_end, int blocks, absl::string_view field_prefix,
                       cab::MaskParams* p);

}  // namespace cab::wire
