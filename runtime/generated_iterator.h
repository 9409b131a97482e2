#pragma once
// A random-access iterator over f(0), f(1), …: vector::assign(begin, end) from it sizes the
// vector once and constructs each element from f(i), so a converted buffer (bytes to pixel
// intensities, a transpose) is written once — a resize would zero-fill its fresh pages first,
// a second pass over memory that is mostly page faults.
#include <compare>
#include <cstddef>
#include <iterator>
#include <utility>

namespace equivae {

// Its reference is a value, as for an iterator over a computed sequence (formally an input
// iterator's, which std::vector::assign does not mind: it measures the range with operator-
// and constructs each element from *it).
template <class F>
struct GeneratedIterator {
  using iterator_category = std::random_access_iterator_tag;
  using value_type = decltype(std::declval<const F&>()(std::ptrdiff_t{}));
  using difference_type = std::ptrdiff_t;
  using pointer = void;
  using reference = value_type;

  const F* f = nullptr;
  difference_type i = 0;

  value_type operator*() const { return (*f)(i); }
  value_type operator[](difference_type d) const { return (*f)(i + d); }
  GeneratedIterator& operator++() { return ++i, *this; }
  GeneratedIterator operator++(int) { return {f, i++}; }
  GeneratedIterator& operator--() { return --i, *this; }
  GeneratedIterator operator--(int) { return {f, i--}; }
  GeneratedIterator& operator+=(difference_type d) { return i += d, *this; }
  GeneratedIterator& operator-=(difference_type d) { return i -= d, *this; }
  friend GeneratedIterator operator+(GeneratedIterator a, difference_type d) { return a += d; }
  friend GeneratedIterator operator+(difference_type d, GeneratedIterator a) { return a += d; }
  friend GeneratedIterator operator-(GeneratedIterator a, difference_type d) { return a -= d; }
  friend difference_type operator-(const GeneratedIterator& a, const GeneratedIterator& b) {
    return a.i - b.i;
  }
  friend auto operator<=>(const GeneratedIterator& a, const GeneratedIterator& b) {
    return a.i <=> b.i;
  }
  friend bool operator==(const GeneratedIterator& a, const GeneratedIterator& b) {
    return a.i == b.i;
  }
};

// Replaces v's contents with f(0) … f(n − 1), each element written once.
template <class Vector, class F>
void assign_generated(Vector& v, std::ptrdiff_t n, const F& f) {
  const GeneratedIterator<F> first{&f, 0};
  v.assign(first, first + n);
}

}  // namespace equivae
