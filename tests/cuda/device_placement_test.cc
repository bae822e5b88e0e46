// DevicePlacement (kernels/cuda/device_placement.h) without a GPU: new sessions spread over the
// devices, a session's calls stay on its device, release frees the slot, calls without a session go
// to the least busy device, and the counts stay consistent under calls from several threads.
#include "device_placement.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace cab::cuda {
namespace {

std::vector<int> Pinned(const DevicePlacement& p) {
  std::vector<int> out;
  for (int d = 0; d < p.devices(); ++d) out.push_back(p.pinned(d));
  return out;
}

int Spread(const std::vector<int>& v) { return *std::max_element(v.begin(), v.end()) - *std::min_element(v.begin(), v.end()); }

TEST(DevicePlacement, NewSessionsSpreadInIndexOrder) {
  DevicePlacement p(3);
  std::vector<int> got;
  for (uint64_t s = 1; s <= 7; ++s) got.push_back(p.Acquire(s).device());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 0, 1, 2, 0}));
  EXPECT_EQ(Pinned(p), (std::vector<int>{3, 2, 2}));
  for (int d = 0; d < 3; ++d) EXPECT_EQ(p.in_flight(d), 0) << "every lease above was dropped";
}

TEST(DevicePlacement, SessionStaysOnItsDeviceWhateverTheLoad) {
  DevicePlacement p(2);
  ASSERT_EQ(p.Acquire(10).device(), 0);
  ASSERT_EQ(p.Acquire(20).device(), 1);
  // Device 0 is made the busiest; session 10 still runs there, session-less calls avoid it.
  std::vector<DevicePlacement::Lease> held;
  for (int i = 0; i < 3; ++i) held.push_back(p.Acquire(10));
  for (const auto& l : held) EXPECT_EQ(l.device(), 0);
  EXPECT_EQ(p.in_flight(0), 3);
  EXPECT_EQ(p.Acquire(10).device(), 0);
  EXPECT_EQ(p.Acquire(0).device(), 1);
  EXPECT_EQ(p.Acquire(20).device(), 1);
  EXPECT_EQ(p.DeviceOf(10), 0);
  EXPECT_EQ(p.DeviceOf(20), 1);
  EXPECT_EQ(p.DeviceOf(30), std::nullopt);
  EXPECT_EQ(Pinned(p), (std::vector<int>{1, 1})) << "repeated calls pin once";
}

TEST(DevicePlacement, TiesBetweenSessionCountsGoToTheLeastBusyDevice) {
  DevicePlacement p(3);
  auto a = p.Acquire(0);  // device 0 (all idle: lowest index)
  auto b = p.Acquire(0);  // device 1
  EXPECT_EQ(a.device(), 0);
  EXPECT_EQ(b.device(), 1);
  EXPECT_EQ(p.Acquire(7).device(), 2) << "no pins anywhere: the device with no call in flight";
}

TEST(DevicePlacement, CallsWithoutSessionPreferFewerPinsOnEqualLoad) {
  DevicePlacement p(2);
  p.Acquire(1);  // pinned to 0, no call in flight
  EXPECT_EQ(p.Acquire(0).device(), 1);
  auto busy = p.Acquire(0);  // device 1 (fewer pins)
  EXPECT_EQ(busy.device(), 1);
  EXPECT_EQ(p.Acquire(0).device(), 0) << "device 1 has a call in flight";
}

TEST(DevicePlacement, ReleaseFreesTheSlot) {
  DevicePlacement p(2);
  for (uint64_t s = 1; s <= 4; ++s) p.Acquire(s);  // 1, 3 -> 0; 2, 4 -> 1
  EXPECT_TRUE(p.Release(3));
  EXPECT_FALSE(p.Release(3)) << "twice";
  EXPECT_FALSE(p.Release(99)) << "never placed";
  EXPECT_EQ(Pinned(p), (std::vector<int>{1, 2}));
  EXPECT_EQ(p.DeviceOf(3), std::nullopt);
  EXPECT_EQ(p.Acquire(5).device(), 0) << "the freed slot is the emptiest";
  EXPECT_EQ(Pinned(p), (std::vector<int>{2, 2}));
}

TEST(DevicePlacement, ReleaseWhileACallIsInFlight) {
  DevicePlacement p(2);
  {
    auto call = p.Acquire(1);
    EXPECT_TRUE(p.Release(1));
    EXPECT_EQ(p.in_flight(0), 1);
    EXPECT_EQ(p.pinned(0), 0);
  }
  EXPECT_EQ(p.in_flight(0), 0);
  // A later call of the released key is a new session (placed again by the rules).
  auto again = p.Acquire(1);
  EXPECT_EQ(again.device(), 0);
  EXPECT_EQ(p.pinned(0), 1);
}

TEST(DevicePlacement, MovedLeaseCountsOnce) {
  DevicePlacement p(1);
  {
    auto a = p.Acquire(0);
    DevicePlacement::Lease b(std::move(a));
    EXPECT_EQ(p.in_flight(0), 1);
    std::optional<DevicePlacement::Lease> c;
    c.emplace(std::move(b));
    EXPECT_EQ(p.in_flight(0), 1);
  }
  EXPECT_EQ(p.in_flight(0), 0);
}

TEST(DevicePlacement, NeedsADevice) { EXPECT_THROW(DevicePlacement(0), std::invalid_argument); }

// Property: with sessions only opened, pinned counts never differ by more than 1; with releases
// interleaved, every new session lands on a device that had the fewest pins at that moment.
TEST(DevicePlacement, PropertiesOverRandomSequences) {
  for (int devices : {1, 2, 3, 5}) {
    SCOPED_TRACE(devices);
    std::mt19937 rng(devices);
    DevicePlacement opens_only(devices);
    for (uint64_t s = 1; s <= 200; ++s) {
      opens_only.Acquire(s);
      ASSERT_LE(Spread(Pinned(opens_only)), 1);
    }
    DevicePlacement p(devices);
    std::vector<uint64_t> open;
    std::map<uint64_t, int> home;
    uint64_t next = 1;
    for (int step = 0; step < 2000; ++step) {
      const int op = std::uniform_int_distribution<int>(0, 2)(rng);
      if (op == 0 || open.empty()) {  // a new session
        const std::vector<int> before = Pinned(p);
        const int d = p.Acquire(next).device();
        ASSERT_EQ(before[d], *std::min_element(before.begin(), before.end()));
        home[next] = d;
        open.push_back(next++);
      } else if (op == 1) {  // a call of an open session: its home device
        const uint64_t s = open[std::uniform_int_distribution<size_t>(0, open.size() - 1)(rng)];
        ASSERT_EQ(p.Acquire(s).device(), home[s]);
      } else {  // a release
        const size_t i = std::uniform_int_distribution<size_t>(0, open.size() - 1)(rng);
        ASSERT_TRUE(p.Release(open[i]));
        open.erase(open.begin() + i);
      }
      const std::vector<int> now = Pinned(p);
      int sum = 0;
      for (int c : now) sum += c;
      ASSERT_EQ(sum, static_cast<int>(open.size()));
    }
  }
}

// Several threads open sessions and make calls at once: each session's calls see one device, the
// pins end balanced within 1, and every lease is returned.
TEST(DevicePlacement, ConcurrentSessionsFromSeveralThreads) {
  const int kDevices = 4, kThreads = 8, kSessionsPerThread = 25, kCalls = 20;
  DevicePlacement p(kDevices);
  std::atomic<int> unstable{0}, overloaded{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kSessionsPerThread; ++i) {
        const uint64_t s = 1 + static_cast<uint64_t>(t) * kSessionsPerThread + i;
        const int first = p.Acquire(s).device();
        for (int c = 0; c < kCalls; ++c) {
          auto lease = p.Acquire(s);
          auto other = p.Acquire(0);  // session-less traffic in between
          if (lease.device() != first) unstable.fetch_add(1);
          if (p.in_flight(lease.device()) < 1) overloaded.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(unstable.load(), 0) << "a session's calls changed device";
  EXPECT_EQ(overloaded.load(), 0) << "a held lease was not counted in flight";
  const std::vector<int> pins = Pinned(p);
  int sum = 0;
  for (int d = 0; d < kDevices; ++d) {
    sum += pins[d];
    EXPECT_EQ(p.in_flight(d), 0);
  }
  EXPECT_EQ(sum, kThreads * kSessionsPerThread);
  EXPECT_LE(Spread(pins), 1) << "sessions only opened: balanced within 1";
  // Release everything from several threads at once.
  threads.clear();
  std::atomic<int> released{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kSessionsPerThread; ++i) {
        released.fetch_add(p.Release(1 + static_cast<uint64_t>(t) * kSessionsPerThread + i));
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(released.load(), kThreads * kSessionsPerThread);
  EXPECT_EQ(Pinned(p), std::vector<int>(kDevices, 0));
}

}  // namespace
}  // namespace cab::cuda
