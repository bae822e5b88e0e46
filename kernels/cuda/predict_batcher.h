// Batching of PredictMask calls: requests with the same batch key (shape and parameters) that
// arrive within `max_delay_us` of the first are run as one launch (their batches stacked), up to
// `max_batch` requests or `max_cost` bytes of scores. The first request of a group leads: it waits
// for the group to fill or the delay to pass, runs the whole group, and wakes the others.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "cab/backend.h"
#include "host_operands.h"

namespace cab::cuda {

struct BatchItem {
  HostOperands ops;  // points into the caller's request, which outlives Submit
  const MaskParams* p = nullptr;
  bool bf16_exact = false;
  int64_t cost = 0;  // bytes of device scores this request needs
  absl::StatusOr<MaskResult> result = absl::InternalError("batch not run");
};

class PredictBatcher {
 public:
  using RunFn = std::function<void(const std::vector<BatchItem*>&)>;
  PredictBatcher(int max_batch, int64_t max_delay_us, int64_t max_cost)
      : max_batch_(max_batch), max_delay_us_(max_delay_us), max_cost_(max_cost) {}

  bool enabled() const { return max_batch_ > 1; }
  // Runs `item` in a group of requests with the same key; returns when its result is set.
  void Submit(const std::string& key, BatchItem* item, const RunFn& run);

 private:
  struct Group {
    std::vector<BatchItem*> items;
    int64_t cost = 0;
    bool closed = false, done = false;
    std::condition_variable cv;
  };
  const int max_batch_;
  const int64_t max_delay_us_, max_cost_;
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Group>> open_;  // groups still accepting requests
};

}  // namespace cab::cuda
