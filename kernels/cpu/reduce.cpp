// Small reductions (metrics): accumulated in double whatever T is.
#include "kernels/cpu/ops.h"

namespace equivae::cpu {

template <class T>
double sum(const T* x, size_t n) {
  double acc = 0;
  for (size_t i = 0; i < n; ++i) acc += double(x[i]);
  return acc;
}

template double sum<float>(const float*, size_t);
template double sum<double>(const double*, size_t);

}  // namespace equivae::cpu
