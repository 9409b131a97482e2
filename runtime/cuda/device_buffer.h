#pragma once
// The CUDA backend's device memory owner and runtime-error check, for both of its builds (the
// emulated one's cudaMalloc & co. are kernels/emu/emu_runtime.h's, on host memory).
#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>

#include "runtime/error.h"

#if defined(EQUIVAE_CUDA_EMULATED)
#include "kernels/emu/emu_runtime.h"
#else
#include <cuda_runtime_api.h>
#endif

namespace equivae {

// Throws Error naming the call when a CUDA runtime call failed.
inline void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw Error("cuda backend", std::string(what) + ": " + cudaGetErrorString(status));
}
#define EQUIVAE_CUDA_CHECK(expr) ::equivae::cuda_check((expr), #expr)

// A block of device memory (at least 256 bytes), freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) {
    EQUIVAE_CUDA_CHECK(cudaMalloc(&ptr_, std::max<size_t>(bytes, 256)));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      if (ptr_) cudaFree(ptr_);
      ptr_ = std::exchange(other.ptr_, nullptr);
    }
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
};

}  // namespace equivae
