#include "predict_batcher.h"

#include <chrono>

namespace cab::cuda {

void PredictBatcher::Submit(const std::string& key, BatchItem* item, const RunFn& run) {
  if (!enabled()) {
    run({item});
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
  run(g->items);  // closed: no one adds to items any more
  lock.lock();
  g->done = true;
  g->cv.notify_all();
}

}  // namespace cab::cuda
