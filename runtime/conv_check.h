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

// For a backend whose convolutions take NCHW only (conv_blocked_between answers false).
inline void check_conv_nchw(const cpu::Conv2dShape& s, const char* op) {
  check(!s.x_blocked && !s.y_blocked, op,
        "blocked operands (Conv2dShape::x_blocked, y_blocked) are for a backend whose "
        "conv_blocked_between allows them; this one takes NCHW only");
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
