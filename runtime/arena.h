#pragma once
// Tensors are views on one arena that a plan takes from its backend up front:
// the plan places every tensor (recording where its pointer lives), then one
// allocation binds them all. Nothing is allocated per step.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/backend.h"

namespace equivae {

// A row-major [rows, cols] view; does not own its memory.
template <class T>
struct Tensor {
  T* data = nullptr;
  int rows = 0, cols = 0;
  size_t size() const { return size_t(rows) * size_t(cols); }
  T* row(int i) const { return data + size_t(i) * cols; }
};

class Arena {
 public:
  static constexpr size_t kAlignment = 64;  // bytes; also a multiple of sizeof(double)

  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() { reset(); }

  // Reserves rows×cols elements for t; t.data is set by allocate().
  template <class T>
  void place(Tensor<T>& t, int rows, int cols) {
    t.rows = rows;
    t.cols = cols;
    const size_t offset = bytes_;
    binders_.push_back([&t, offset](char* base) { t.data = reinterpret_cast<T*>(base + offset); });
    bytes_ += (t.size() * sizeof(T) + kAlignment - 1) / kAlignment * kAlignment;
  }
  // Current end of the reserved region (element offsets of regions are derived from it).
  size_t reserved_bytes() const { return bytes_; }

  // Takes one zero-filled block from the backend and binds every placed tensor.
  template <class T>
  void allocate(Backend<T>& backend) {
    reset();
    block_ = backend.allocate(bytes_);
    release_ = [](void* ctx, void* block) { static_cast<Backend<T>*>(ctx)->release(block); };
    backend_ = &backend;
    for (const auto& bind : binders_) bind(static_cast<char*>(block_));
  }
  void* base() const { return block_; }

 private:
  void reset() {
    if (block_) release_(backend_, block_);
    block_ = nullptr;
  }
  std::vector<std::function<void(char*)>> binders_;
  size_t bytes_ = 0;
  void* block_ = nullptr;
  void* backend_ = nullptr;
  void (*release_)(void*, void*) = nullptr;
};

}  // namespace equivae
