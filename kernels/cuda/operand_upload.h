// Moving PredictMask's score operands from the host to a worker's input slot: staged into the
// slot's pinned buffer (stacked over the requests of a batch, bf16 where the GEMM takes bf16) and
// copied on the worker's copy stream.
#pragma once

#include <cuda_runtime.h>

#include <vector>

#include "absl/status/statusor.h"
#include "device_predictor.h"
#include "host_operands.h"
#include "worker.h"

namespace cab::cuda {

// One request's share of an upload: batches [b0, b0 + nb) and query heads [h0, h0 + nh).
struct UploadPart {
  const HostOperands* ops;
  int b0, nb, h0, nh;
};

// True when the operands the scores GEMM reads are all exactly bf16 values (bf16 bits are; fp32
// values are scanned). Quest's bound kernel reads fp32: false.
bool OperandsBf16(const HostOperands& o);

// Waits until `slot` is free of earlier work, stages the parts' query operand and the matching kv
// heads' key operand (Quest: bounds), stacked along the batch (every part has the same heads, blocks
// and dim), enqueues the copies on `copy_stream` and records slot.uploaded. The returned inputs
// point into the slot; the compute stream must wait for slot.uploaded before reading them.
// bf16_exact: OperandsBf16 of every part; bf16_scores: the predictor's GEMM takes bf16 for them.
absl::StatusOr<PredictorInputs> UploadOperands(InputSlot& slot, cudaStream_t copy_stream,
                                               const std::vector<UploadPart>& parts, bool bf16_exact, bool bf16_scores);

}  // namespace cab::cuda
