#pragma once
// conv2d and conv_transpose2d as the one forward convolution cuDNN's three calls speak of,
// conv_y = conv(conv_x, W) (cudnn_conv.h): conv2d is that convolution itself; a transpose is
// the convolution running the other way — its input is the transpose's output
// [N, C_out, Ho, Wo], its output the transpose's input [N, C_in, H, W], and the transpose's
// W[C_in, C_out, KH, KW] is its filter [K = C_in, C = C_out]. Shared by the cuDNN plans and
// the emulated build's stand-in (cudnn_conv_emulated.h), so both read the same geometry.
#include "kernels/cpu/ops.h"

namespace equivae {

// The forward convolution of the op on a valid shape s (conv_shape_problem(s, transposed)
// empty): conv_x is [N, C_in, H, W] of the result, conv_y its conv2d output. For a transpose
// that output is s's own input size, as output_padding < stride makes the floor land there.
inline cpu::Conv2dShape forward_convolution(const cpu::Conv2dShape& s, bool transposed) {
  if (!transposed) return s;
  cpu::Conv2dShape c = s;
  c.C_in = s.C_out;
  c.C_out = s.C_in;
  c.H = cpu::conv_out_h(s, true);
  c.W = cpu::conv_out_w(s, true);
  c.output_padding = 0;
  return c;
}

}  // namespace equivae
