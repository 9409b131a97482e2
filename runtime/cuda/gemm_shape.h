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

// The same product as a column-major library sees it: D = op(A')·op(B') on the same buffers,
// with A' = our B and B' = our A. Each operand as stored: rows × cols, leading dimension ld,
// transposed by the GEMM when `trans`. (cuBLASLt's matrix layouts and transposes.)
struct ColumnMajorOperand {
  bool trans;
  int rows, cols, ld;
};
struct ColumnMajorGemm {
  ColumnMajorOperand a, b;
  int rows, cols, ld;  // D (and C): N × M
};
inline ColumnMajorGemm column_major(const Gemm& g) {
  // Our B is K×N row-major (N×K if transposed), i.e. N×K column-major (K×N if transposed).
  const ColumnMajorOperand a{g.trans_b, g.trans_b ? g.K : g.N, g.trans_b ? g.N : g.K, g.ldb};
  // Our A is M×K row-major (K×M if transposed), i.e. K×M column-major (M×K if transposed).
  const ColumnMajorOperand b{g.trans_a, g.trans_a ? g.M : g.K, g.trans_a ? g.K : g.M, g.lda};
  return {a, b, g.N, g.M, g.ldc};
}

}  // namespace equivae
