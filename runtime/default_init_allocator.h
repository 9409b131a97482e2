#pragma once
// std::allocator whose value-less construct default-initialises: a vector of bytes or floats
// resized with it is not zero-filled first, for buffers about to be overwritten whole (an
// inflated file: one pass over tens of MB of fresh pages rather than two).
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace equivae {

template <class T>
struct DefaultInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() = default;
  template <class U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}

  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    std::allocator_traits<std::allocator<T>>::construct(static_cast<std::allocator<T>&>(*this), p,
                                                        std::forward<Args>(args)...);
  }
};

}  // namespace equivae
