// A small bounded thread pool for the CPU backend. ParallelFor runs n independent work items on at
// most `threads` threads (the caller's thread included) and returns when all are done. Several callers
// may use one pool at once: each caller also works through its own items, so a busy pool slows a call
// down but never deadlocks it.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace cab::cpu {

class ThreadPool {
 public:
  // threads <= 0: hardware concurrency, capped at kMaxDefaultThreads.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return threads_; }

  // Calls fn(i) for every i in [0, n), on up to threads() threads; blocks until all calls returned.
  void ParallelFor(int64_t n, const std::function<void(int64_t)>& fn);

  static constexpr int kMaxDefaultThreads = 64;

 private:
  void WorkerLoop();

  int threads_ = 1;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;  // threads_ - 1 of them: the caller is the last thread
};

}  // namespace cab::cpu
