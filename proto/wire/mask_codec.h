// Mask codec: cab::BlockMask (CSR, the canonical form) -> cab.v1.BlockMask in the format the
// caller asked for, and back (clients decode any of the three formats to CSR).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cab/mask.h"
#include "cab/v1/cab.pb.h"

namespace cab::wire {

// MASK_FORMAT_UNSPECIFIED is BSR. Any other value outside the enum is INVALID_ARGUMENT naming `field`.
absl::StatusOr<cab::v1::MaskFormat> ResolveFormat(cab::v1::MaskFormat format, absl::string_view field);

// Fills `out` (cleared first) with `mask` in `format`; `out->format()` is the resolved format and
// `density` is mask.Density(causal).
absl::Status EncodeMask(const cab::BlockMask& mask, cab::v1::MaskFormat format, bool causal, cab::v1::BlockMask* out);

// Decodes any format back to CSR, validating shapes, byte counts and the CSR invariants; errors
// name the field ("mask.row_offsets", ...).
absl::StatusOr<cab::BlockMask> DecodeMask(const cab::v1::BlockMask& mask);

}  // namespace cab::wire
