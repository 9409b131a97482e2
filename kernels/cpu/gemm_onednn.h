#pragma once
// The float GEMMs' second route on the CPU: oneDNN's matmul (Debian's libdnnl). With AVX-512 it
// runs oneDNN's brgemm kernels, 1.1–1.2× OpenBLAS's speed on the dense layers' shapes of one
// AVX-512 EPYC, 1.9× on a Zen 5 one (where OpenBLAS 0.3.21 takes its AVX2 kernels); oneDNN 2.6
// has none for AVX2, where its older gemm:jit driver ran at 0.89× OpenBLAS's speed. Which GEMMs
// take it is dense_gemm.cpp's choice.
namespace equivae::cpu::onednn {

// C[M,N] = op(A)·op(B) + beta·C, row-major, op(X) = Xᵀ when trans_x. Returns false, having done
// nothing, where this route does not take the GEMM — no oneDNN in the build, beta other than 0
// or 1, an empty shape, a shape oneDNN refuses or offers only its reference loops for — and the
// caller runs OpenBLAS. The primitive is created (JIT-compiled) on a shape's first call, per
// thread count, and kept for the process; calls from several threads at once are safe, and a
// call from inside an OpenMP parallel region (the im2col convolutions' lanes) runs on its
// thread alone, as a one-thread primitive. brgemm_only: also false where oneDNN would run the
// shape without its brgemm kernels.
bool gemm(bool trans_a, bool trans_b, int M, int N, int K, const float* A, int lda, const float* B,
          int ldb, float beta, float* C, int ldc, bool brgemm_only);
// Whether oneDNN runs this CPU's GEMMs in its brgemm kernels (a 160 × 512 × 512 product asked).
bool brgemm_available();

}  // namespace equivae::cpu::onednn
