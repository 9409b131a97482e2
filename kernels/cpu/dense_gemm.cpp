// The dense layers' float GEMM: oneDNN's matmul or OpenBLAS, by the process's GemmRoute.
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

// Automatic is oneDNN wherever it takes the GEMM: on the MNIST step's 21 shapes it was faster
// on every one (bench_ops BM_DenseGemm, B = 160; the step's 27 GEMMs 8.9 vs 10.9 ms on
// 2 threads, 17.5 vs 19.3 ms on one).
void dense_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, const float* A,
                int lda, const float* Bm, int ldb, float beta, float* C, int ldc) {
  if (gemm_route() != GemmRoute::openblas &&
      onednn::gemm(ta == CblasTrans, tb == CblasTrans, M, N, K, A, lda, Bm, ldb, beta, C, ldc))
    return;
  gemm(ta, tb, M, N, K, A, lda, Bm, ldb, beta, C, ldc);
}

}  // namespace equivae::cpu
