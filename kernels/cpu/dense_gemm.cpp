// The dense layers' and the im2col convolutions' float GEMM: oneDNN's matmul or OpenBLAS, by the
// process's GemmRoute.
#include <string>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/gemm_onednn.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/route_choice.h"

namespace equivae::cpu {
namespace {
// EQUIVAE_CPU_GEMM=auto|openblas|onednn, in GemmRoute's order.
RouteChoice<GemmRoute>& gemm_route_choice() {
  static RouteChoice<GemmRoute> choice("EQUIVAE_CPU_GEMM", {"auto", "openblas", "onednn"},
                                       "GEMM route");
  return choice;
}
}  // namespace

void set_gemm_route(GemmRoute route) {
  gemm_route_choice().set(route);
}
GemmRoute gemm_route_named(const std::string& name) {
  return gemm_route_choice().named(name);
}
GemmRoute gemm_route() {
  return gemm_route_choice().get();
}
bool onednn_gemm_automatic() {
  return onednn::brgemm_available();
}

// Automatic is oneDNN wherever it runs the GEMM in its brgemm kernels (AVX-512): on the MNIST
// step's 21 GEMM shapes it was faster on every one (bench_ops --benchmark_filter=Dense; the 27
// GEMMs of BM_GemmFloor 10.0 vs 11.5 ms on 2 threads of the development machine). Its AVX2 path
// (DNNL_MAX_CPU_ISA=AVX2 there) ran them 1.11–1.13× slower than OpenBLAS: automatic keeps
// OpenBLAS.
void dense_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, const float* A,
                int lda, const float* Bm, int ldb, float beta, float* C, int ldc) {
  const GemmRoute route = gemm_route();
  if (route != GemmRoute::openblas &&
      onednn::gemm(ta == CblasTrans, tb == CblasTrans, M, N, K, A, lda, Bm, ldb, beta, C, ldc,
                   route == GemmRoute::automatic))
    return;
  gemm(ta, tb, M, N, K, A, lda, Bm, ldb, beta, C, ldc);
}

}  // namespace equivae::cpu
