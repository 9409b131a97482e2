#pragma once
// The argument checks every backend makes before a convolution op (kernels/cpu/ops.h has the
// shape rules): a clear Error naming the op instead of an out-of-bounds access.
#include <string>

#include "kernels/cpu/ops.h"
#include "runtime/error.h"

namespace equivae {

inline void check_conv_shape(const cpu::Conv2dShape& s, bool transposed, const char* op) {
  const std::string problem = cpu::conv_shape_problem(s, transposed);
  check(problem.empty(), op, problem);
}

// needed: what the backend's *_workspace_bytes(s) answers for the shape.
inline void check_conv_workspace(const void* workspace, size_t bytes, size_t needed,
                                 const char* op) {
  check(bytes >= needed, op,
        "workspace of " + std::to_string(bytes) + " bytes, the shape needs " +
            std::to_string(needed) + " (ask the backend's workspace query)");
  check(needed == 0 || workspace != nullptr, op, "null workspace");
}

}  // namespace equivae
