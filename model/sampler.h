#pragma once
// Class-balanced batches with leave-one-out pooling sets (README, "The model"): C segments
// of k items; row i pools m_i ~ U{1..min(m_max, k−1)} distinct other rows of its
// own segment, never itself. Every draw is a Philox function of (seed, step), so
// a step's batch does not depend on what ran before it (resume-friendly).
#include <cstdint>
#include <vector>

namespace equivae {

struct Batch {
  std::vector<int32_t> rows;     // [B] data-set index of each batch row; segment c = rows c·k..
  std::vector<int32_t> offsets;  // [R+1] CSR offsets of the pooling sets of all R rows
  std::vector<int32_t> members;  // [offsets[R]] labelled batch rows pooled by each row
  // Semi-supervised: [U] indices into the unlabelled set; row B + u·C + y of the plan
  // is unlabelled item u paired with label y, its r_y pooled from segment y.
  std::vector<int32_t> unlabelled_rows;
};

class BalancedBatchSampler {
 public:
  // labels: [N] class of each data-set item; throws Error if a class has fewer than k items.
  BalancedBatchSampler(const std::vector<int32_t>& labels, int classes, int k, int m_max,
                       uint64_t seed);
  // One epoch = N / B steps (at least 1).
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  int batch_size() const { return classes_ * k_; }
  // Fills batch for the global step (epoch = step / steps_per_epoch).
  void sample(uint64_t step, Batch& batch);

 private:
  void shuffle_for_epoch(uint64_t epoch);
  std::vector<std::vector<int32_t>> by_class_;  // data-set indices of each class
  std::vector<std::vector<int32_t>> order_;     // this epoch's permutation of by_class_
  int classes_, k_, m_cap_;
  uint64_t seed_;
  int64_t steps_per_epoch_ = 1;
  int64_t shuffled_epoch_ = -1;
};

// Unlabelled items for the semi-supervised step: U per step, each of N items once per
// epoch (N / U steps), in a Philox order per epoch. Appends to a labelled batch (after
// BalancedBatchSampler::sample) the C·U pooling sets: for (u, y), m ~ U{1..min(m_max, k)}
// distinct rows of labelled segment y (u is not in the labelled batch, so none is excluded).
class UnlabelledSampler {
 public:
  UnlabelledSampler(int64_t n, int per_step, int classes, int k, int m_max, uint64_t seed);
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  void sample(uint64_t step, Batch& batch);

 private:
  int64_t n_;
  int per_step_, classes_, k_, m_cap_;
  uint64_t seed_;
  int64_t steps_per_epoch_ = 1;
  int64_t shuffled_epoch_ = -1;
  std::vector<int32_t> order_;
};

}  // namespace equivae
