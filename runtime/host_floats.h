#pragma once
// An array of floats in a backend's host memory (Backend::allocate_host: page-locked on a GPU),
// released with the array. The backend must outlive it.
#include <cstddef>
#include <span>
#include <utility>

#include "runtime/backend.h"

namespace equivae {

template <class T>
class HostFloats {
 public:
  HostFloats() = default;
  HostFloats(Backend<T>& backend, size_t count)
      : backend_(&backend),
        data_(count ? static_cast<float*>(backend.allocate_host(count * sizeof(float))) : nullptr),
        count_(count) {}
  HostFloats(const HostFloats&) = delete;
  HostFloats& operator=(const HostFloats&) = delete;
  HostFloats(HostFloats&& other) noexcept
      : backend_(std::exchange(other.backend_, nullptr)),
        data_(std::exchange(other.data_, nullptr)),
        count_(std::exchange(other.count_, 0)) {}
  HostFloats& operator=(HostFloats&& other) noexcept {
    if (this != &other) {
      release();
      backend_ = std::exchange(other.backend_, nullptr);
      data_ = std::exchange(other.data_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  ~HostFloats() { release(); }

  float* data() const { return data_; }
  size_t size() const { return count_; }
  std::span<float> span() const { return {data_, count_}; }

 private:
  void release() {
    if (data_) backend_->release_host(data_);
    data_ = nullptr;
    count_ = 0;
  }
  Backend<T>* backend_ = nullptr;
  float* data_ = nullptr;
  size_t count_ = 0;
};

}  // namespace equivae
