#pragma once
// The float convolutions' second route on the CPU: oneDNN (Debian's libdnnl), whose JIT kernels
// convolve in blocked channel layouts (nChw16c on AVX-512, nChw8c on AVX2) at ~1.2× OpenBLAS's
// GEMM rate, where the im2col route (conv.cpp) runs at ~0.7× of it. Tensors are NCHW at the
// op's edges, or already blocked where the shape says so (Conv2dShape::x_blocked, y_blocked:
// between two convolutions of a stack): each call reorders its NCHW operands into the layouts
// the primitive asks for and its NCHW result back, in the caller's workspace (nothing is
// allocated per call; oneDNN's scratchpad is carved from the same workspace).
//
// Which op takes which route is conv.cpp's choice (use_onednn). Primitives are created once per
// shape (JIT-compiled then) and kept for the process. Without oneDNN at build time available()
// is false and the other calls throw.
#include <cstddef>

#include "kernels/cpu/ops.h"

namespace equivae::cpu::onednn {

bool available();
// The channel block of the blocked layout (Conv2dShape::x_blocked) on this CPU: 16 or 8, or 0
// where oneDNN's convolutions use neither (or oneDNN is missing).
int channel_block();
// Whether oneDNN takes this shape, with its blocked flags (not: a transpose whose output_padding
// exceeds its padding, which would need a negative right padding; a batch above 512 images; a shape
// for which it has only its slow reference loops). Creates the shape's primitives on first call.
bool supports(const Conv2dShape& s, bool transposed);
// Bytes of workspace any of the shape's calls below needs (0 when unavailable or unsupported).
size_t workspace_bytes(const Conv2dShape& s, bool transposed);

// y[N, C_out, Ho, Wo] = act(op(x) + b); b may be null. W in the layouts of kernels/cpu/ops.h.
void forward(float* y, const float* x, const float* W, const float* b, const Conv2dShape& s,
             bool transposed, bool relu, void* workspace);
// The gradients from dy (already masked by the caller): dx = the op's adjoint applied to dy,
// dW (overwritten) from the op's input x and dy; either may be null (skipped). With both, dy is
// reordered once for the two where they read it in one layout.
void backward(float* dx, float* dW, const float* x, const float* dy, const float* W,
              const Conv2dShape& s, bool transposed, void* workspace);

}  // namespace equivae::cpu::onednn
