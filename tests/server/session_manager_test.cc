// Session bookkeeping: the session count limit, per-session and total memory accounting, close
// reasons, and idle expiry driven by an explicit clock.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "session_manager.h"

namespace cab::server {
namespace {

using ::testing::HasSubstr;

Limits SmallLimits() {
  Limits l;
  l.max_sessions = 2;
  l.max_session_bytes = 1000;
  l.max_total_bytes = 1500;
  return l;
}

const absl::Time kT0 = absl::FromUnixSeconds(1000000);

TEST(SessionManager, SessionCountLimit) {
  SessionManager m(SmallLimits(), absl::Seconds(60), nullptr);
  auto a = m.Open("", kT0, nullptr);
  auto b = m.Open("mine", kT0, nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(b->id, "mine");
  EXPECT_FALSE(a->id.empty());
  EXPECT_NE(a->key, b->key);
  auto c = m.Open("", kT0, nullptr);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("--max_sessions=2"));
  EXPECT_TRUE(m.Close(a->key, kClosedCompleted));
  EXPECT_FALSE(m.Close(a->key, kClosedCompleted)) << "closing twice";
  EXPECT_TRUE(m.Open("", kT0, nullptr).ok()) << "a closed session frees its slot";
}

TEST(SessionManager, GeneratedIdsAreUnique) {
  Limits l;
  SessionManager m(l, absl::Seconds(60), nullptr);
  std::set<std::string> ids;
  for (int i = 0; i < 50; ++i) ids.insert(m.Open("", kT0, nullptr)->id);
  EXPECT_EQ(ids.size(), 50u);
}

TEST(SessionManager, MemoryAccountingPerSessionAndTotal) {
  SessionManager m(SmallLimits(), absl::Seconds(60), nullptr);
  auto a = m.Open("", kT0, nullptr);
  auto b = m.Open("", kT0, nullptr);
  EXPECT_TRUE(m.CheckBytes(a->key, 1000).ok());
  auto over = m.CheckBytes(a->key, 1001);
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.message(), HasSubstr("--max_session_bytes=1000"));
  m.SetBytes(a->key, 900, kT0);
  EXPECT_EQ(m.total_bytes(), 900);
  // b alone may hold 1000, but not next to a's 900.
  auto total = m.CheckBytes(b->key, 700);
  EXPECT_EQ(total.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(total.message(), HasSubstr("--max_total_bytes=1500"));
  EXPECT_TRUE(m.CheckBytes(b->key, 600).ok());
  // Re-checking a's own size counts a's current bytes once, not twice.
  EXPECT_TRUE(m.CheckBytes(a->key, 950).ok());
  m.SetBytes(b->key, 600, kT0);
  EXPECT_EQ(m.total_bytes(), 1500);
  m.SetBytes(a->key, 100, kT0);  // shrinking is always fine
  EXPECT_EQ(m.total_bytes(), 700);
  EXPECT_EQ(m.session_bytes(a->key), 100);
  m.Close(b->key, kClosedCancelled);
  EXPECT_EQ(m.total_bytes(), 100);
  EXPECT_EQ(m.CheckBytes(b->key, 1).code(), absl::StatusCode::kFailedPrecondition) << "closed session";
}

TEST(SessionManager, IdleExpiryRunsCallbacksOfIdleSessionsOnly) {
  SessionManager m(SmallLimits(), absl::Seconds(10), nullptr);
  int idle_a = 0, idle_b = 0;
  auto a = m.Open("", kT0, [&] { ++idle_a; });
  auto b = m.Open("", kT0, [&] { ++idle_b; });
  m.SetBytes(a->key, 300, kT0);
  m.Touch(b->key, kT0 + absl::Seconds(8));
  EXPECT_EQ(m.ExpireIdle(kT0 + absl::Seconds(9)), 0);
  EXPECT_EQ(m.ExpireIdle(kT0 + absl::Seconds(10)), 1);
  EXPECT_EQ(idle_a, 1);
  EXPECT_EQ(idle_b, 0);
  EXPECT_FALSE(m.is_open(a->key));
  EXPECT_EQ(m.total_bytes(), 0) << "an expired session's memory is released";
  EXPECT_FALSE(m.Close(a->key, kClosedCancelled)) << "already closed by expiry";
  EXPECT_EQ(m.ExpireIdle(kT0 + absl::Seconds(18)), 1);
  EXPECT_EQ(idle_b, 1);
  EXPECT_EQ(m.open_sessions(), 0);
}

TEST(SessionManager, UnconfiguredStreamsExpireWithoutCountingAsSessions) {
  SessionManager m(SmallLimits(), absl::Seconds(10), nullptr);
  int expired = 0, removed = 0;
  m.AddPendingStream(kT0, [&] { ++expired; });
  const uint64_t other = m.AddPendingStream(kT0, [&] { ++removed; });
  EXPECT_EQ(m.open_sessions(), 0);
  ASSERT_TRUE(m.Open("", kT0, nullptr).ok());
  ASSERT_TRUE(m.Open("", kT0, nullptr).ok()) << "pending streams take no session slot";
  m.RemovePendingStream(other);  // it sent its config
  EXPECT_EQ(m.ExpireIdle(kT0 + absl::Seconds(9)), 0);
  EXPECT_EQ(m.ExpireIdle(kT0 + absl::Seconds(10)), 3);  // the pending stream and both idle sessions
  EXPECT_EQ(expired, 1);
  EXPECT_EQ(removed, 0);
}

}  // namespace
}  // namespace cab::server
