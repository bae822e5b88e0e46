// PredictBatcher (kernels/cuda/predict_batcher.h) without a GPU: which requests share a run. The
// outcomes do not depend on timing: groups close when full long before the (10 s) delay, and
// requests of different keys never share a run whatever the timing.
#include "predict_batcher.h"

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace cab::cuda {
namespace {

struct Recorder {
  std::mutex mu;
  std::vector<size_t> group_sizes;
  PredictBatcher::RunFn Fn() {
    return [this](const std::vector<BatchItem*>& items) {
      {
        std::lock_guard<std::mutex> lock(mu);
        group_sizes.push_back(items.size());
      }
      for (BatchItem* it : items) it->result = MaskResult{};
    };
  }
};

TEST(PredictBatcher, FullGroupRunsOnceForAll) {
  PredictBatcher batcher(/*max_batch=*/4, /*max_delay_us=*/10'000'000, /*max_cost=*/1 << 30);
  Recorder rec;
  std::vector<BatchItem> items(4);
  std::vector<std::thread> threads;
  for (auto& it : items) threads.emplace_back([&] { batcher.Submit("same", &it, rec.Fn()); });
  for (auto& t : threads) t.join();
  ASSERT_EQ(rec.group_sizes.size(), 1u);
  EXPECT_EQ(rec.group_sizes[0], 4u);
  for (auto& it : items) EXPECT_TRUE(it.result.ok()) << it.result.status();
}

TEST(PredictBatcher, DifferentKeysNeverShare) {
  PredictBatcher batcher(2, 20'000, 1 << 30);
  Recorder rec;
  std::vector<BatchItem> items(2);
  std::thread a([&] { batcher.Submit("key-a", &items[0], rec.Fn()); });
  std::thread b([&] { batcher.Submit("key-b", &items[1], rec.Fn()); });
  a.join();
  b.join();
  ASSERT_EQ(rec.group_sizes.size(), 2u);
  EXPECT_EQ(rec.group_sizes[0], 1u);
  EXPECT_EQ(rec.group_sizes[1], 1u);
}

TEST(PredictBatcher, CostCapStartsANewGroup) {
  PredictBatcher batcher(8, 20'000, /*max_cost=*/100);
  Recorder rec;
  std::vector<BatchItem> items(3);
  for (auto& it : items) it.cost = 60;  // no two fit under the cap
  std::vector<std::thread> threads;
  for (auto& it : items) threads.emplace_back([&] { batcher.Submit("same", &it, rec.Fn()); });
  for (auto& t : threads) t.join();
  ASSERT_EQ(rec.group_sizes.size(), 3u);
  for (size_t n : rec.group_sizes) EXPECT_EQ(n, 1u);
}

TEST(PredictBatcher, DisabledRunsAtOnce) {
  PredictBatcher batcher(1, 10'000'000, 1 << 30);
  EXPECT_FALSE(batcher.enabled());
  Recorder rec;
  BatchItem it;
  batcher.Submit("k", &it, rec.Fn());  // would wait 10 s if it batched
  ASSERT_EQ(rec.group_sizes.size(), 1u);
  EXPECT_TRUE(it.result.ok());
}

TEST(PredictBatcher, ExceptionBecomesEveryMembersError) {
  PredictBatcher batcher(2, 10'000'000, 1 << 30);
  std::vector<BatchItem> items(2);
  auto throwing = [](const std::vector<BatchItem*>&) { throw std::runtime_error("boom"); };
  std::thread a([&] { batcher.Submit("k", &items[0], throwing); });
  std::thread b([&] { batcher.Submit("k", &items[1], throwing); });
  a.join();
  b.join();
  for (auto& it : items) {
    ASSERT_FALSE(it.result.ok());
    EXPECT_EQ(it.result.status().code(), absl::StatusCode::kInternal);
    EXPECT_NE(std::string(it.result.status().message()).find("boom"), std::string::npos);
  }
}

}  // namespace
}  // namespace cab::cuda
