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
constexpr uint64_t kUnlabelledOrderSalt = 0x5eed'0003'0000'0000ull;
constexpr uint64_t kUnlabelledPoolingSalt = 0x5eed'0004'0000'0000ull;

// Appends m distinct picks from candidates (partial Fisher–Yates; candidates is scrambled).
void pick_distinct(std::vector<int32_t>& candidates, int m, uint64_t seed, uint64_t step,
                   uint32_t row, std::vector<int32_t>& out) {
  const int n = int(candidates.size());
  for (int s = 0; s < m; ++s) {
    const uint32_t pick =
        uint32_t(s) + philox_below(uint32_t(n - s), seed, step, row, uint32_t(1 + s));
    std::swap(candidates[s], candidates[pick]);
    out.push_back(candidates[s]);
  }
}
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
  batch.unlabelled_rows.clear();
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
      pick_distinct(others, m, salt, step, uint32_t(row), batch.members);
      batch.offsets[row + 1] = int32_t(batch.members.size());
    }
  }
}

UnlabelledSampler::UnlabelledSampler(int64_t n, int per_step, int classes, int k, int m_max,
                                     uint64_t seed)
    : n_(n),
      per_step_(per_step),
      classes_(classes),
      k_(k),
      m_cap_(std::min(m_max, k)),
      seed_(seed) {
  check(per_step >= 1, "unlabelled sampler", "needs at least one item per step");
  check(n >= per_step, "unlabelled sampler",
        "the unlabelled set holds " + std::to_string(n) + " items, fewer than the " +
            std::to_string(per_step) + " drawn per step");
  steps_per_epoch_ = n / per_step;
}

void UnlabelledSampler::sample(uint64_t step, Batch& batch) {
  const uint64_t epoch = step / uint64_t(steps_per_epoch_);
  if (int64_t(epoch) != shuffled_epoch_) {
    order_.resize(n_);
    std::iota(order_.begin(), order_.end(), 0);
    for (int64_t i = n_ - 1; i > 0; --i)
      std::swap(order_[i], order_[philox_below(uint32_t(i + 1), seed_ ^ kUnlabelledOrderSalt, epoch,
                                               0, uint32_t(i))]);
    shuffled_epoch_ = int64_t(epoch);
  }
  const int64_t begin = int64_t(step % uint64_t(steps_per_epoch_)) * per_step_;
  batch.unlabelled_rows.assign(order_.begin() + begin, order_.begin() + begin + per_step_);

  const int B = classes_ * k_;
  check(int(batch.offsets.size()) == B + 1, "unlabelled sampler",
        "expects a labelled batch of " + std::to_string(B) + " rows first");
  std::vector<int32_t> segment(k_);
  const uint64_t salt = seed_ ^ kUnlabelledPoolingSalt;
  for (int u = 0; u < per_step_; ++u) {
    for (int y = 0; y < classes_; ++y) {
      const uint32_t row = uint32_t(B + u * classes_ + y);
      const int m = 1 + int(philox_below(uint32_t(m_cap_), salt, step, row, 0));
      for (int j = 0; j < k_; ++j) segment[j] = y * k_ + j;
      pick_distinct(segment, m, salt, step, row, batch.members);
      batch.offsets.push_back(int32_t(batch.members.size()));
    }
  }
}

}  // namespace equivae
