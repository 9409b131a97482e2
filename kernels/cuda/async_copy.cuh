#pragma once
// Asynchronous global → shared copies (cp.async, sm_80+) in commit groups, so a kernel keeps
// several stages of loads in flight without holding them in registers:
//
//   AsyncCopies<kMaxPending> copies;       // one per thread, a local variable
//   copies.copy4(smem, gmem, valid);       // 4 bytes; zeros when !valid (gmem not read)
//   copies.copy16(smem, gmem, valid);      // 16 bytes, both addresses 16-byte aligned
//   copies.commit();                       // closes a group
//   copies.wait<N>();                      // all but the newest N groups have landed
//
// A thread sees its own copies after wait; other threads' after wait and a barrier. Under nvcc
// these are the PTX instructions and the object holds nothing. Under the emulator each copy is
// recorded and lands only at the wait that covers its group (kMaxPending copies at most), so
// shared memory read before its wait holds what it held before — a missing wait shows up as
// stale data, as it can on a GPU. A copy into a race-checked array (smem an emu::SharedPtr:
// `a[i] + j` of an EQUIVAE_SHARED_2D/3D array) is checked as well: its issue is a write of the
// issuing thread, any access to the word before it lands is a race (with its own thread too),
// and its landing is the issuing thread's write in the phase of the wait.
#include <cstdint>
#include <cstring>

#include "kernels/cuda/launch.h"

namespace equivae::cuda {

#if defined(__CUDACC__)

template <int kMaxPending>
class AsyncCopies {
 public:
  __device__ __forceinline__ void copy4(float* smem, const float* gmem, bool valid) {
    const unsigned dst = unsigned(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(gmem),
                 "r"(valid ? 4 : 0)
                 : "memory");
  }
  __device__ __forceinline__ void copy16(float* smem, const float* gmem, bool valid) {
    const unsigned dst = unsigned(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
                 "r"(valid ? 16 : 0)
                 : "memory");
  }
  __device__ __forceinline__ void commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  }
  template <int kNewest>
  __device__ __forceinline__ void wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kNewest) : "memory");
  }
};

#else

template <int kMaxPending>
class AsyncCopies {
  using Checked = ::emu::SharedPtr<float>;

 public:
  void copy4(float* smem, const float* gmem, bool valid) { record(smem, {}, gmem, valid, 1); }
  void copy4(Checked smem, const float* gmem, bool valid) { record(nullptr, smem, gmem, valid, 1); }
  void copy16(float* smem, const float* gmem, bool valid) {
    check_alignment(smem, gmem);
    record(smem, {}, gmem, valid ? 4 : 0, 4);
  }
  void copy16(Checked smem, const float* gmem, bool valid) {
    check_alignment(smem.address(), gmem);
    record(nullptr, smem, gmem, valid ? 4 : 0, 4);
  }
  void commit() { ++group_; }
  template <int kNewest>
  void wait() {
    int kept = 0;
    for (int i = 0; i < count_; ++i) {
      Copy& c = pending_[i];
      if (c.group + kNewest < group_) {  // an older group than the newest kNewest: it lands
        for (int k = 0; k < c.floats; ++k) {
          const float v = k < c.valid ? c.gmem[k] : 0.0f;
          if (c.smem)
            c.smem[k] = v;
          else
            c.checked[k].async_land(v);
        }
      } else {
        pending_[kept++] = c;
      }
    }
    count_ = kept;
  }

 private:
  struct Copy {
    float* smem;      // an unchecked destination, or null and:
    Checked checked;  // a race-checked one
    const float* gmem;
    int valid, floats, group;
  };
  static void check_alignment(const float* smem, const float* gmem) {
    if ((reinterpret_cast<uintptr_t>(smem) | reinterpret_cast<uintptr_t>(gmem)) % 16 != 0)
      ::emu::detail::fail("cp.async of 16 bytes on an address that is not 16-byte aligned");
  }
  void record(float* smem, Checked checked, const float* gmem, int valid, int floats) {
    if (count_ == kMaxPending) ::emu::detail::fail("more cp.async copies in flight than declared");
    if (!smem)
      for (int k = 0; k < floats; ++k) checked[k].async_issue();  // bounds and race check
    pending_[count_++] = Copy{smem, checked, gmem, valid, floats, group_};
  }
  Copy pending_[kMaxPending];
  int count_ = 0, group_ = 0;
};

#endif

}  // namespace equivae::cuda
