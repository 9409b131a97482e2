#pragma once
// Row-major GEMM overloads, so a layer is written once for float and double:
// C[M,N] = op(A)·op(B) + beta·C. gemm() is OpenBLAS; dense_gemm() is the dense layers' and the
// im2col convolutions' GEMM, whose float route is chosen (GemmRoute in ops.h).
#include <cblas.h>

namespace equivae::cpu {

inline void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, const float* A,
                 int lda, const float* Bm, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, A, lda, Bm, ldb, beta, C, ldc);
}
inline void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, const double* A,
                 int lda, const double* Bm, int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, 1.0, A, lda, Bm, ldb, beta, C, ldc);
}

// float: oneDNN's matmul or OpenBLAS (dense_gemm.cpp); double: OpenBLAS, the reference.
void dense_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, const float* A,
                int lda, const float* Bm, int ldb, float beta, float* C, int ldc);
inline void dense_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, const double* A,
                       int lda, const double* Bm, int ldb, double beta, double* C, int ldc) {
  gemm(ta, tb, M, N, K, A, lda, Bm, ldb, beta, C, ldc);
}

}  // namespace equivae::cpu
