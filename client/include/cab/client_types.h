// Inputs and results of cab::Client calls, in kernels types (cab::TensorView, cab::BlockMask, ...).
// The raw wire messages (cab/v1/cab.pb.h) are kept beside them for callers who need every field.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "cab/evict.h"
#include "cab/mask.h"
#include "cab/params.h"
#include "cab/tensor.h"
#include "cab/v1/cab.pb.h"

namespace cab {

// The wire layout a mask travels in. Every format decodes to the same cab::BlockMask.
enum class MaskFormat { kBsr = 1, kBitmap = 2, kFlex = 3 };
absl::StatusOr<MaskFormat> ParseMaskFormat(const std::string& name);  // "bsr" | "bitmap" | "flex"
std::string Name(MaskFormat format);

// One unary prediction over a whole Q/K.
struct PredictInput {
  int block_size = 64;
  MaskParams params;            // policy, its parameters, and the rows to answer (row_begin/row_end)
  MaskFormat format = MaskFormat::kBsr;
  bool diagnostics = false;
  TensorView q;                 // [B, Hq, N, D]
  TensorView k;                 // [B, Hkv, N, D]
  // Coarsen q and k here and send only the representatives (and Quest's key min/max):
  // about block_size times fewer bytes, the same mask.
  bool representatives = false;
};


// A mask as the service answered it.
struct MaskReply {
  BlockMask mask;               // decoded from the format that travelled
  MaskFormat format = MaskFormat::kBsr;
  double density = 0;           // the server's figure: kept / causal pairs of the answered rows
  v1::Diagnostics diagnostics;  // filled when asked for
  v1::Timings timings;          // server-side stage times
  int64_t request_bytes = 0;    // serialized sizes, for bandwidth accounting
  int64_t response_bytes = 0;
  // Time spent here building the request (tensor copies, client-side coarsening); unary only.
  double client_encode_seconds = 0;
};

struct EvictReply {
  KeepIndices keep;             // [B, Hkv, per_head], rows ascending
  v1::Timings timings;
};

}  // namespace cab
