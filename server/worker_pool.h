// A fixed pool of worker threads with a bounded FIFO queue. Heavy compute runs here, never on
// gRPC's threads, so a burst of large requests queues (visibly, in cab_queue_depth) instead of
// starving the transport.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace cab::server {

class WorkerPool {
 public:
  // `on_depth` (optional) is called with the queue depth after every change, under the pool lock
  // (keep it cheap: a gauge update).
  WorkerPool(int threads, size_t max_queue, std::function<void(size_t)> on_depth = nullptr);
  ~WorkerPool();  // runs what is queued, then joins
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task`; false when the queue is full (the caller answers RESOURCE_EXHAUSTED).
  bool Submit(std::function<void()> task);
  size_t depth() const;
  // Blocks until the queue is empty and no task runs (used at shutdown, before the gRPC server
  // that the tasks answer through is destroyed).
  void WaitIdle();
  int threads() const { return static_cast<int>(workers_.size()); }

 private:
  void Run();

  const size_t max_queue_;
  std::function<void(size_t)> on_depth_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::condition_variable idle_cv_;
  int running_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace cab::server
