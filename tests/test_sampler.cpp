// The class-balanced batch sampler and its leave-one-out pooling sets.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "model/sampler.h"
#include "runtime/error.h"

namespace equivae {
namespace {

std::vector<int32_t> cyclic_labels(int n, int classes) {
  std::vector<int32_t> labels(n);
  for (int i = 0; i < n; ++i) labels[i] = (i * 7 + i / 3) % classes;
  return labels;
}

TEST(Sampler, PoolingSetsAreDistinctSameSegmentOthers) {
  const int C = 10, k = 16, m_max = 7;
  const auto labels = cyclic_labels(2000, C);
  BalancedBatchSampler sampler(labels, C, k, m_max, 3);
  Batch batch;
  std::map<int, int> m_counts;
  for (uint64_t step = 0; step < 50; ++step) {
    sampler.sample(step, batch);
    ASSERT_EQ(batch.rows.size(), size_t(C * k));
    ASSERT_EQ(batch.offsets.size(), size_t(C * k + 1));
    for (int i = 0; i < C * k; ++i) {
      const int segment = i / k;
      EXPECT_EQ(labels[batch.rows[i]], segment) << "row " << i << " holds the wrong class";
      const int m = batch.offsets[i + 1] - batch.offsets[i];
      ASSERT_GE(m, 1);
      ASSERT_LE(m, m_max);
      ++m_counts[m];
      std::set<int> seen;
      for (int s = batch.offsets[i]; s < batch.offsets[i + 1]; ++s) {
        const int j = batch.members[s];
        EXPECT_NE(j, i) << "row " << i << " pools itself";
        EXPECT_EQ(j / k, segment) << "row " << i << " pools row " << j << " of another class";
        EXPECT_TRUE(seen.insert(j).second) << "row " << i << " pools row " << j << " twice";
      }
    }
  }
  for (int m = 1; m <= m_max; ++m) EXPECT_GT(m_counts[m], 0) << "m = " << m << " never drawn";
}

TEST(Sampler, MCappedByTheSegment) {
  const auto labels = cyclic_labels(300, 3);
  BalancedBatchSampler sampler(labels, 3, 3, 10, 1);  // k − 1 = 2 < m_max
  Batch batch;
  sampler.sample(0, batch);
  for (int i = 0; i < 9; ++i) EXPECT_LE(batch.offsets[i + 1] - batch.offsets[i], 2);
}

TEST(Sampler, EpochVisitsEachItemOnceWhenClassesAreEven) {
  const int C = 4, k = 5;
  std::vector<int32_t> labels(C * k * 6);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = int32_t(i % C);
  BalancedBatchSampler sampler(labels, C, k, 3, 11);
  ASSERT_EQ(sampler.steps_per_epoch(), 6);
  std::multiset<int> seen;
  Batch batch;
  for (uint64_t step = 0; step < 6; ++step) {
    sampler.sample(step, batch);
    seen.insert(batch.rows.begin(), batch.rows.end());
  }
  EXPECT_EQ(seen.size(), labels.size());
  for (size_t i = 0; i < labels.size(); ++i) EXPECT_EQ(seen.count(int(i)), 1u) << i;
}

TEST(Sampler, DeterministicPerStepAndSeed) {
  const auto labels = cyclic_labels(1000, 10);
  BalancedBatchSampler a(labels, 10, 8, 4, 5), b(labels, 10, 8, 4, 5), c(labels, 10, 8, 4, 6);
  Batch ba, bb, bc;
  a.sample(17, ba);
  b.sample(3, bb);  // b visits another step first: step 17 must not depend on it
  b.sample(17, bb);
  c.sample(17, bc);
  EXPECT_EQ(ba.rows, bb.rows);
  EXPECT_EQ(ba.members, bb.members);
  EXPECT_NE(ba.rows, bc.rows);
}

TEST(Sampler, RejectsTooSmallClassesAndBadLabels) {
  std::vector<int32_t> labels = cyclic_labels(100, 10);
  try {
    BalancedBatchSampler(labels, 10, 16, 7, 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fewer than k = 16"), std::string::npos) << e.what();
  }
  labels[5] = 12;
  EXPECT_THROW(BalancedBatchSampler(labels, 10, 2, 1, 1), Error);
}

}  // namespace
}  // namespace equivae
