#pragma once
// A row-major GEMM's shape, as cblas takes it with CblasRowMajor:
//   C[M,N] = op(A)·op(B) + beta·C,   op(A) is M×K, op(B) is K×N.
// cuBLAS and cuBLASLt are column-major: a row-major M×N matrix is its column-major N×M
// transpose, so the same product is Cᵀ = op(B)ᵀ·op(A)ᵀ there — the callers swap the operands
// and M/N and keep the transposes.
namespace equivae {

struct Gemm {
  bool trans_a, trans_b;
  int M, N, K, lda, ldb, ldc;
  double beta;
};

}  // namespace equivae
