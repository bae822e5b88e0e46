#include "predict_batcher.h"

#include <chrono>
#include <exception>

namespace cab::cuda {
namespace {

// Runs the group; an exception (e.g. std::bad_alloc while splitting a mask) becomes every member's
// error instead of leaving the waiting requests without a result.
void RunGuarded(const PredictBatcher::RunFn& run, const std::vector<BatchItem*>& items) {
  try {
    run(items);
  } catch (const std::exception& e) {
    for (BatchItem* it : items) it->result = absl::InternalError(std::string("batched predict: ") + e.what());
  }
}

}  // namespace

void PredictBatcher::Submit(const std::string& key, BatchItem* item, const RunFn& run) {
  if (!enabled()) {
    RunGuarded(run, {item});
    return;
  }
  std::unique_lock<std::mutex> lock(mu_);
  auto it = open_.find(key);
  if (it != open_.end() && it->second->cost + item->cost <= max_cost_) {  // join the open group
    std::shared_ptr<Group> g = it->second;
    g->items.push_back(item);
    g->cost += item->cost;
    if (static_cast<int>(g->items.size()) >= max_batch_) {
      open_.erase(it);
      g->closed = true;
      g->cv.notify_all();
    }
    g->cv.wait(lock, [&] { return g->done; });
    return;
  }
  // Lead a new group (a full-cost group stays open for others of its key; this one replaces it).
  auto g = std::make_shared<Group>();
  g->items.push_back(item);
  g->cost = item->cost;
  open_[key] = g;
  g->cv.wait_for(lock, std::chrono::microseconds(max_delay_us_), [&] { return g->closed; });
  if (!g->closed) {
    auto mine = open_.find(key);
    if (mine != open_.end() && mine->second == g) open_.erase(mine);
    g->closed = true;
  }
  lock.unlock();
  RunGuarded(run, g->items);  // closed: no one adds to items any more
  lock.lock();
  g->done = true;
  g->cv.notify_all();
}

}  // namespace cab::cuda
