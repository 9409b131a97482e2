#include "model/subsets.h"

#include <algorithm>
#include <string>

#include "kernels/philox.h"
#include "runtime/error.h"

namespace equivae {
namespace {
constexpr uint64_t kSubsetSalt = 0x5eed'0005'0000'0000ull;
}

Dataset gather(const Dataset& data, const std::vector<int64_t>& indices, const std::string& what) {
  Dataset out;
  out.rows = data.rows;
  out.cols = data.cols;
  out.dim = data.dim;
  out.channels = data.channels;
  out.num_classes = data.num_classes;
  out.n = int64_t(indices.size());
  out.source = data.source + " " + what;
  out.images.reserve(indices.size() * data.dim);
  for (int64_t i : indices) {
    out.images.insert(out.images.end(), data.image(i), data.image(i) + data.dim);
    out.labels.push_back(data.labels[i]);
  }
  return out;
}

void check_labelled_split(const Dataset& data, int64_t count) {
  const int C = data.num_classes;
  check(count > 0 && count % C == 0, data.source,
        "a labelled subset of " + std::to_string(count) + " cannot be balanced over " +
            std::to_string(C) + " classes (use a multiple of " + std::to_string(C) + ")");
  std::vector<int64_t> class_size(C, 0);
  for (int32_t label : data.labels) ++class_size[label];
  for (int c = 0; c < C; ++c)
    check(class_size[c] >= count / C, data.source,
          "class " + std::to_string(c) + " has " + std::to_string(class_size[c]) +
              " examples, fewer than the " + std::to_string(count / C) +
              " labelled ones asked for");
}

LabelledSplit split_labelled(const Dataset& data, int64_t count, uint64_t seed) {
  check_labelled_split(data, count);
  const int C = data.num_classes;
  const int64_t per_class = count / C;
  std::vector<std::vector<int64_t>> by_class(C);
  for (int64_t i = 0; i < data.n; ++i) by_class[data.labels[i]].push_back(i);
  std::vector<int64_t> labelled, unlabelled;
  std::vector<char> taken(data.n, 0);
  for (int c = 0; c < C; ++c) {
    std::vector<int64_t>& items = by_class[c];
    // Partial Fisher–Yates: the first per_class of a seeded permutation of the class.
    for (int64_t s = 0; s < per_class; ++s) {
      const int64_t pick = s + philox_below(uint32_t(items.size() - s), seed ^ kSubsetSalt, 0,
                                            uint32_t(c), uint32_t(s));
      std::swap(items[s], items[pick]);
      labelled.push_back(items[s]);
      taken[items[s]] = 1;
    }
  }
  for (int64_t i = 0; i < data.n; ++i)
    if (!taken[i]) unlabelled.push_back(i);
  // Appended, not "[" + ... + "]": g++ 12 reports a false -Wrestrict on that chain.
  std::string name = "[";
  name += std::to_string(count);
  name += " labelled]";
  return {gather(data, labelled, name), gather(data, unlabelled, "[unlabelled]")};
}

}  // namespace equivae
