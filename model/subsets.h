#pragma once
// Labelled subsets for semi-supervised runs: `count` examples balanced over the
// classes (count / C each), chosen by seed; the rest of the set is unlabelled.
#include <cstdint>
#include <vector>

#include "model/idx_dataset.h"

namespace equivae {

struct LabelledSplit {
  Dataset labelled;    // count examples, count / C per class, in class-major order
  Dataset unlabelled;  // every other example (labels kept for evaluation only)
};

// Throws Error if count is not a multiple of the classes or a class has too few examples.
LabelledSplit split_labelled(const Dataset& data, int64_t count, uint64_t seed);
// split_labelled's checks alone (any seed draws from the same class sizes): for a tool to
// refuse a count before it starts.
void check_labelled_split(const Dataset& data, int64_t count);

// Rows [indices] of data as a new set.
Dataset gather(const Dataset& data, const std::vector<int64_t>& indices, const std::string& what);

}  // namespace equivae
