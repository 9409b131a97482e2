#include "model/sampler.h"

#include <algorithm>
#include <numeric>
#include <string>

#include "kernels/philox.h"
#include "runtime/error.h"

namespace equivae {
namespace {
// Salts keep the sampler's Philox streams apart from the model's (init, noise).
constexpr uint64_t kPermutationSalt = 0x5eed'0001'0000'0000ull;
constexpr uint64_t kPoolingSalt = 0x5eed'0002'0000'0000ull;
}  // namespace

BalancedBatchSampler::BalancedBatchSampler(const std::vector<int32_t>& labels, int classes, int k,
                                           int m_max, uint64_t seed)
    : by_class_(classes), order_(classes), classes_(classes), k_(k), seed_(seed) {
  check(k >= 2, "batch sampler", "k must be at least 2, got " + std::to_string(k));
  check(m_max >= 1, "batch sampler", "m_max must be at least 1");
  m_cap_ = std::min(m_max, k - 1);
  for (size_t i = 0; i < labels.size(); ++i) {
    check(labels[i] >= 0 && labels[i] < classes, "batch sampler",
          "label " + std::to_string(labels[i]) + " of item " + std::to_string(i) +
              " is outside [0, " + std::to_string(classes) + ")");
    by_class_[labels[i]].push_back(int32_t(i));
  }
  for (int c = 0; c < classes; ++c)
    check(int(by_class_[c].size()) >= k, "batch sampler",
          "class " + std::to_string(c) + " has " + std::to_string(by_class_[c].size()) +
              " items, fewer than k = " + std::to_string(k) + " needed per batch");
  steps_per_epoch_ = std::max<int64_t>(1, int64_t(labels.size()) / (int64_t(classes) * k));
}

void BalancedBatchSampler::shuffle_for_epoch(uint64_t epoch) {
  for (int c = 0; c < classes_; ++c) {
    std::vector<int32_t>& order = order_[c];
    order = by_class_[c];
    // Fisher–Yates with Philox draws indexed by (epoch, class, position).
    for (size_t i = order.size() - 1; i > 0; --i) {
      const uint32_t j =
          philox_below(uint32_t(i + 1), seed_ ^ kPermutationSalt, epoch, uint32_t(c), uint32_t(i));
      std::swap(order[i], order[j]);
    }
  }
  shuffled_epoch_ = int64_t(epoch);
}

void BalancedBatchSampler::sample(uint64_t step, Batch& batch) {
  const uint64_t epoch = step / uint64_t(steps_per_epoch_);
  const uint64_t step_in_epoch = step % uint64_t(steps_per_epoch_);
  if (int64_t(epoch) != shuffled_epoch_) shuffle_for_epoch(epoch);

  const int B = batch_size();
  batch.rows.resize(B);
  batch.offsets.assign(B + 1, 0);
  batch.members.clear();
  std::vector<int32_t> others(k_ - 1);
  for (int c = 0; c < classes_; ++c) {
    const std::vector<int32_t>& order = order_[c];
    for (int j = 0; j < k_; ++j) {
      // Classes smaller than steps·k wrap around within the epoch's permutation.
      batch.rows[c * k_ + j] = order[(step_in_epoch * k_ + j) % order.size()];
    }
    for (int j = 0; j < k_; ++j) {
      const int row = c * k_ + j;
      const uint64_t salt = seed_ ^ kPoolingSalt;
      const int m = 1 + int(philox_below(uint32_t(m_cap_), salt, step, uint32_t(row), 0));
      // The k−1 other rows of the segment; a partial Fisher–Yates picks m of them.
      for (int o = 0, n = 0; o < k_; ++o)
        if (o != j) others[n++] = c * k_ + o;
      for (int s = 0; s < m; ++s) {
        const uint32_t pick = uint32_t(s) + philox_below(uint32_t(k_ - 1 - s), salt, step,
                                                         uint32_t(row), uint32_t(1 + s));
        std::swap(others[s], others[pick]);
        batch.members.push_back(others[s]);
      }
      batch.offsets[row + 1] = int32_t(batch.members.size());
    }
  }
}

}  // namespace equivae
