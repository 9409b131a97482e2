#pragma once
// What a GEMM's fused epilogue does, in the engine's row-major terms: C[M,N] = op(A)·op(B) + β·C
// is M rows (the batch) of N features, then
//   bias:          C[m,n] += bias[n]
//   relu_bias:     C[m,n] = max(C[m,n] + bias[n], 0)
//   relu_aux_bias: relu_bias, and bit n + m·aux_ld of the mask aux set where the result is > 0
//   drelu_bgrad:   C[m,n] = 0 where that bit is clear (a ReLU's backward: C becomes the
//                  pre-activation gradient), then bias[n] = Σ_m C[m,n] (its bias gradient)
//   drelu:         the mask alone, as drelu_bgrad without the bias gradient
// This is the contract between the CUDA backend and cuBLASLt: lt_gemm.h maps each kind to its
// cublasLtEpilogue_t, and apply_epilogue below is the same on the host, which the emulated build
// runs in cuBLASLt's place (lt_gemm_emulated.h) and the CPU tests check. The mask layout is
// cuBLASLt's: column-major over Cᵀ (N × M), aux_ld bits per column, aux_ld a multiple of 128
// and ≥ N.
#include <cstddef>
#include <cstdint>

namespace equivae {

enum class GemmEpilogue { none, bias, relu_bias, relu_aux_bias, drelu_bgrad, drelu };

struct LtEpilogue {
  GemmEpilogue kind = GemmEpilogue::none;
  const void* bias = nullptr;  // float[N]: read by bias*, written by drelu_bgrad
  void* aux = nullptr;  // the ReLU bit mask: written by relu_aux_bias, read by drelu_bgrad, drelu
  int64_t aux_ld = 0;
};

// e with only the pointers its kind reads or writes. A bias handed with no bias epilogue made
// cublasLtMatmul refuse the GEMM ("an unsupported value or parameter") on an H200
// (BM_GemmShape's input-gradient GEMMs, 2026-11-27): LtGemm drops such pointers instead.
inline LtEpilogue with_used_pointers(LtEpilogue e) {
  // Every kind but none and drelu reads or writes bias[N].
  const bool bias = e.kind != GemmEpilogue::none && e.kind != GemmEpilogue::drelu;
  const bool aux = e.kind == GemmEpilogue::relu_aux_bias || e.kind == GemmEpilogue::drelu_bgrad ||
                   e.kind == GemmEpilogue::drelu;
  if (!bias) e.bias = nullptr;
  if (!aux) {
    e.aux = nullptr;
    e.aux_ld = 0;
  }
  return e;
}

// The mask of a ReLU over M rows of N features: its leading dimension in bits, and its bytes.
inline int64_t lt_relu_mask_ld(int N) {
  return (int64_t(N) + 127) / 128 * 128;
}
inline size_t lt_relu_mask_bytes(int M, int N) {
  return size_t(lt_relu_mask_ld(N) / 8) * size_t(M > 0 ? M : 0);
}

// The epilogue on a host C[M,N] (leading dimension ldc) that already holds the product. The
// bias gradient sums rows in order, as the CPU backend's dense backward does.
inline void apply_epilogue(const LtEpilogue& e, float* C, int M, int N, int ldc) {
  auto* mask = static_cast<uint8_t*>(e.aux);
  auto bit = [&](int m, int n) { return size_t(n) + size_t(m) * size_t(e.aux_ld); };
  switch (e.kind) {
    case GemmEpilogue::none:
      return;
    case GemmEpilogue::bias:
    case GemmEpilogue::relu_bias:
    case GemmEpilogue::relu_aux_bias: {
      const auto* b = static_cast<const float*>(e.bias);
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
          float& c = C[size_t(m) * ldc + n];
          c += b[n];
          if (e.kind == GemmEpilogue::bias) continue;
          if (c < 0.0f) c = 0.0f;  // NaN propagates, as in the CPU's dense forward
          if (e.kind != GemmEpilogue::relu_aux_bias) continue;
          const size_t k = bit(m, n);
          if (c > 0.0f)
            mask[k / 8] = uint8_t(mask[k / 8] | (1u << (k % 8)));
          else
            mask[k / 8] = uint8_t(mask[k / 8] & ~(1u << (k % 8)));
        }
      return;
    }
    case GemmEpilogue::drelu:
    case GemmEpilogue::drelu_bgrad: {
      // drelu_bgrad's bias gradient; drelu has none.
      auto* db = e.kind == GemmEpilogue::drelu_bgrad
                     ? static_cast<float*>(const_cast<void*>(e.bias))
                     : nullptr;
      if (db)
        for (int n = 0; n < N; ++n) db[n] = 0.0f;
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
          float& c = C[size_t(m) * ldc + n];
          const size_t k = bit(m, n);
          if (!((mask[k / 8] >> (k % 8)) & 1u)) c = 0.0f;
          if (db) db[n] += c;
        }
      return;
    }
  }
}

}  // namespace equivae
