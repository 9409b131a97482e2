// Dense layer on dense_gemm (oneDNN or OpenBLAS, blas.h); bias and ReLU are applied in the same
// pass over y.
#include <cblas.h>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/ops.h"

namespace equivae::cpu {

template <class T>
void dense_forward_partial(T* y, const T* x, const T* W, int B, int in, int out) {
  dense_gemm(CblasNoTrans, CblasNoTrans, B, out, in, x, in, W, out, T(0), y, out);
}

template <class T>
void dense_forward(T* y, const T* x, const T* W, const T* b, int B, int in, int out, bool relu,
                   bool accumulate) {
  dense_gemm(CblasNoTrans, CblasNoTrans, B, out, in, x, in, W, out, accumulate ? T(1) : T(0), y,
             out);
#pragma omp parallel for schedule(static) if (B * out > 32768)
  for (int i = 0; i < B; ++i) {
    T* yi = y + size_t(i) * out;
    if (relu) {
      for (int j = 0; j < out; ++j) {
        const T z = yi[j] + b[j];
        yi[j] = z < T(0) ? T(0) : z;  // NaN propagates, as in PyTorch
      }
    } else {
      for (int j = 0; j < out; ++j) yi[j] += b[j];
    }
  }
}

template <class T>
void relu_bias_backward(T* dy, T* db, const T* y, int B, int out, bool relu) {
  if (relu) {
#pragma omp parallel for schedule(static) if (B * out > 32768)
    for (int i = 0; i < B; ++i) {
      T* dyi = dy + size_t(i) * out;
      const T* yi = y + size_t(i) * out;
      for (int j = 0; j < out; ++j) dyi[j] = yi[j] > T(0) ? dyi[j] : T(0);
    }
  }
  if (!db) return;
  // Column sums of dz, accumulated row by row so the inner loop vectorises.
  for (int j = 0; j < out; ++j) db[j] = T(0);
  for (int i = 0; i < B; ++i) {
    const T* dyi = dy + size_t(i) * out;
    for (int j = 0; j < out; ++j) db[j] += dyi[j];
  }
}

template <class T>
void dense_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y, int B, int in,
                    int out, bool relu, bool accumulate_dx, T* input_relu_db) {
  relu_bias_backward(dy, db, y, B, out, relu);
  dense_gemm(CblasTrans, CblasNoTrans, in, out, B, x, in, dy, out, T(0), dW, out);
  if (dx)
    dense_gemm(CblasNoTrans, CblasTrans, B, in, out, dy, out, W, out, accumulate_dx ? T(1) : T(0),
               dx, in);
  if (input_relu_db) relu_bias_backward(dx, input_relu_db, x, B, in, true);
}

template void dense_forward<float>(float*, const float*, const float*, const float*, int, int, int,
                                   bool, bool);
template void dense_forward<double>(double*, const double*, const double*, const double*, int, int,
                                    int, bool, bool);
template void dense_forward_partial<float>(float*, const float*, const float*, int, int, int);
template void dense_forward_partial<double>(double*, const double*, const double*, int, int, int);
template void dense_backward<float>(float*, float*, float*, float*, const float*, const float*,
                                    const float*, int, int, int, bool, bool, float*);
template void dense_backward<double>(double*, double*, double*, double*, const double*,
                                     const double*, const double*, int, int, int, bool, bool,
                                     double*);
template void relu_bias_backward<float>(float*, float*, const float*, int, int, bool);
template void relu_bias_backward<double>(double*, double*, const double*, int, int, bool);

}  // namespace equivae::cpu
