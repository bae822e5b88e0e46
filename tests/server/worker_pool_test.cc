// The worker pool runs everything it accepts, refuses beyond its queue bound, and reports depth.
#include <atomic>
#include <condition_variable>
#include <mutex>

#include "gtest/gtest.h"
#include "worker_pool.h"

namespace cab::server {
namespace {

TEST(WorkerPool, RunsEveryAcceptedTask) {
  std::atomic<int> ran{0};
  {
    WorkerPool pool(3, 1000);
    for (int i = 0; i < 200; ++i) ASSERT_TRUE(pool.Submit([&] { ++ran; }));
    pool.WaitIdle();
    EXPECT_EQ(ran.load(), 200);
  }
}

TEST(WorkerPool, RefusesBeyondTheQueueBoundAndReportsDepth) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false, started = false;
  std::atomic<size_t> last_depth{99};
  WorkerPool pool(1, 2, [&](size_t d) { last_depth = d; });
  // Occupy the only worker until released.
  ASSERT_TRUE(pool.Submit([&] {
    std::unique_lock<std::mutex> lock(mu);
    started = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  }));
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return started; });
  }
  EXPECT_TRUE(pool.Submit([] {}));
  EXPECT_TRUE(pool.Submit([] {}));
  EXPECT_EQ(pool.depth(), 2u);
  EXPECT_EQ(last_depth.load(), 2u);
  EXPECT_FALSE(pool.Submit([] {})) << "queue of 2 is full";
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  pool.WaitIdle();
  EXPECT_EQ(pool.depth(), 0u);
  EXPECT_EQ(last_depth.load(), 0u);
}

}  // namespace
}  // namespace cab::server
