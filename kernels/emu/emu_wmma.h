#pragma once
// The emulator's nvcuda::wmma (CUDA's <mma.h>): the tensor-core fragments and their warp-wide
// load, store, fill and multiply-accumulate, for the one shape the kernels use — TF32 inputs,
// FP32 accumulators, m16n16k8. A fragment's element-to-lane mapping is unspecified in CUDA;
// here lane l holds the elements l·E … l·E + E − 1 of the fragment's matrix in row-major order
// (E = num_elements: 4 for a 16×8 or 8×16 input, 8 for a 16×16 accumulator, as on the GPU).
// Loads and stores touch only the lane's own elements; in a race-checked shared array (an
// emu::SharedPtr, `a[i] + j`) each element is checked as an access of the lane that holds it,
// so a warp's load of what another warp stored in the same barrier phase is a race (on a GPU
// the lanes' shares differ, but never span warps). mma_sync meets the whole warp (all 32
// lanes, as on the GPU), each lane reads every lane's A and B elements and computes its own
// accumulator elements. The products use A and B with their 13 low mantissa bits dropped (the
// tensor core reads TF32 so), accumulated in float in k order.
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/emu/emu.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}  // namespace precision

template <class Use, int M, int N, int K, class T, class Layout = void>
class fragment {
  static_assert(M == 16 && N == 16 && K == 8, "the emulator's wmma has the m16n16k8 shape only");
  static_assert(std::is_same_v<Use, accumulator> ? std::is_same_v<T, float>
                                                 : std::is_same_v<T, precision::tf32>,
                "the emulator's wmma has TF32 inputs with float accumulators only");

 public:
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = rows * cols / 32;
  float x[num_elements];
};

// Rounds to TF32 (10 mantissa bits, to nearest, ties away from zero: cvt.rna.tf32.f32).
inline float __float_to_tf32(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if ((bits & 0x7F800000u) != 0x7F800000u) bits = (bits + 0x1000u) & ~0x1FFFu;
  std::memcpy(&v, &bits, 4);
  return v;
}

namespace detail {
inline float tf32_operand(float v) {  // what the tensor core reads of an input element
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits &= ~0x1FFFu;
  std::memcpy(&v, &bits, 4);
  return v;
}
// Where element (r, c) of a rows × cols matrix lies, for a memory layout and leading dimension.
inline size_t offset(int r, int c, bool row_major, unsigned ldm) {
  return row_major ? size_t(r) * ldm + size_t(c) : size_t(c) * ldm + size_t(r);
}
template <class F>
inline void for_own_elements(int cols, int count, F f) {
  const int first = int(::emu::detail::lane_id()) * count;
  for (int e = 0; e < count; ++e) f(e, (first + e) / cols, (first + e) % cols);
}
}  // namespace detail

template <class Use, class T, class Layout>
inline void fill_fragment(fragment<Use, 16, 16, 8, T, Layout>& f, float value) {
  for (float& v : f.x) v = value;
}

// Where a fragment is loaded from or stored to: a raw address (global memory, an unchecked
// __shared__ array; Raw: const float* for loads, float* for stores) or a checked shared array's
// emu::SharedPtr (`a[i] + j`, or the row `a[i]`), returned by address() as what it indexes.
template <class P, class Raw>
concept MatrixAddress =
    std::is_convertible_v<P, Raw> || std::is_convertible_v<P, ::emu::SharedPtr<float>>;
template <class Raw, class P>
inline auto address(P p) {
  if constexpr (std::is_convertible_v<P, Raw>)
    return Raw(p);
  else
    return ::emu::SharedPtr<float>(p);
}

// A or B from memory (shared or global), in the fragment's layout.
template <class Use, class Layout, MatrixAddress<const float*> P>
inline void load_matrix_sync(fragment<Use, 16, 16, 8, precision::tf32, Layout>& f, P p,
                             unsigned ldm) {
  using F = fragment<Use, 16, 16, 8, precision::tf32, Layout>;
  constexpr bool row = std::is_same_v<Layout, row_major>;
  const auto a = address<const float*>(p);
  detail::for_own_elements(F::cols, F::num_elements, [&](int e, int r, int c) {
    f.x[e] = a[detail::offset(r, c, row, ldm)];
  });
}
template <MatrixAddress<const float*> P>
inline void load_matrix_sync(fragment<accumulator, 16, 16, 8, float>& f, P p, unsigned ldm,
                             layout_t layout) {
  const auto a = address<const float*>(p);
  detail::for_own_elements(16, 8, [&](int e, int r, int c) {
    f.x[e] = a[detail::offset(r, c, layout == mem_row_major, ldm)];
  });
}
template <MatrixAddress<float*> P>
inline void store_matrix_sync(P p, const fragment<accumulator, 16, 16, 8, float>& f, unsigned ldm,
                              layout_t layout) {
  const auto a = address<float*>(p);
  detail::for_own_elements(16, 8, [&](int e, int r, int c) {
    a[detail::offset(r, c, layout == mem_row_major, ldm)] = f.x[e];
  });
}

// d = a·b + c over the warp (d may be c).
template <class LayoutA, class LayoutB>
inline void mma_sync(fragment<accumulator, 16, 16, 8, float>& d,
                     const fragment<matrix_a, 16, 16, 8, precision::tf32, LayoutA>& a,
                     const fragment<matrix_b, 16, 16, 8, precision::tf32, LayoutB>& b,
                     const fragment<accumulator, 16, 16, 8, float>& c) {
  struct Mine {
    const float* a;  // 4 elements of A (16×8, row-major order)
    const float* b;  // 4 elements of B (8×16, row-major order)
  } mine{a.x, b.x};
  struct Work {
    float A[16][8], B[8][16];
  } work;
  ::emu::detail::warp_collective(
      &mine,
      [](const void* const* lanes, void* ctx) {
        auto* w = static_cast<Work*>(ctx);
        for (int l = 0; l < 32; ++l) {
          const auto* m = static_cast<const Mine*>(lanes[l]);
          for (int e = 0; e < 4; ++e) {
            const int i = l * 4 + e;
            w->A[i / 8][i % 8] = detail::tf32_operand(m->a[e]);
            w->B[i / 16][i % 16] = detail::tf32_operand(m->b[e]);
          }
        }
      },
      &work);
  float out[8];
  detail::for_own_elements(16, 8, [&](int e, int r, int col) {
    float sum = c.x[e];
    for (int k = 0; k < 8; ++k) sum = std::fma(work.A[r][k], work.B[k][col], sum);
    out[e] = sum;
  });
  for (int e = 0; e < 8; ++e) d.x[e] = out[e];
}

}  // namespace nvcuda::wmma
