// Eviction over every (batch, kv head) on the CPU: validation, conversion to float, and the
// per-head policies of evict_head.h on a thread pool.
#pragma once

#include "absl/status/statusor.h"
#include "cab/evict.h"
#include "cab/params.h"
#include "thread_pool.h"

namespace cab::cpu {

absl::StatusOr<KeepIndices> EvictCpu(const EvictInputs& in, const EvictParams& p, ThreadPool& pool);

}  // namespace cab::cpu
