#pragma once
// One harness for every op (in the manner of ggml's test-backend-ops): an op
// case declares its inputs and outputs and runs forward/backward for any T; the
// harness then checks, for the case:
//   - float against the double reference: normalised MSE ≤ 1e-7 on every output
//     and every gradient, and every element within 1e-4 of its own magnitude (above a
//     floor of 1% of the tensor's RMS): the NMSE alone lets an error confined to the
//     small elements through (a float-only LeakyReLU slope 3% off passed it);
//   - the double backward against central finite differences of the scalar
//     L = Σ_o Σ dy_o ⊙ y_o (dy random);
//   - no NaN/Inf anywhere (outputs start as NaN, so an unwritten element shows);
//   - guard sentinels around every buffer untouched (out-of-range writes).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kernels/philox.h"

namespace equivae::test {

// A buffer with sentinel guards on both sides.
template <class T>
class Guarded {
 public:
  static constexpr int kGuard = 16;
  static constexpr T kSentinel = T(-7.77e7);
  Guarded() : Guarded(0) {}
  explicit Guarded(size_t n, T fill = std::numeric_limits<T>::quiet_NaN())
      : storage_(n + 2 * kGuard, kSentinel), n_(n) {
    for (size_t i = 0; i < n; ++i) storage_[kGuard + i] = fill;
  }
  T* data() { return storage_.data() + kGuard; }
  const T* data() const { return storage_.data() + kGuard; }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return data()[i]; }
  T operator[](size_t i) const { return data()[i]; }
  bool guards_intact() const {
    for (int g = 0; g < kGuard; ++g)
      if (storage_[g] != kSentinel || storage_[kGuard + n_ + g] != kSentinel) return false;
    return true;
  }

 private:
  std::vector<T> storage_;
  size_t n_;
};

// A named real buffer: size, the range its random values come from, whether the
// op's backward produces its gradient (named "d" + name), and which elements of that
// gradient the backward computes (all unless `checked` says otherwise).
struct BufferSpec {
  std::string name;
  size_t size = 0;
  double lo = -1, hi = 1;
  bool differentiable = true;
  std::function<bool(size_t)> checked = nullptr;
  // Off for values whose float rounding is not their own, e.g. Box–Muller noise near a zero of
  // cos (its NMSE is still checked).
  bool elementwise = true;
};

template <class T>
struct Buffers {
  std::map<std::string, Guarded<T>> real;
  std::map<std::string, Guarded<int32_t>> ints;
  T* operator[](const std::string& name) {
    auto it = real.find(name);
    if (it == real.end()) ADD_FAILURE() << "op case uses undeclared buffer " << name;
    return it->second.data();
  }
  int32_t* i(const std::string& name) { return ints.at(name).data(); }
};

// A case's optional index inputs (int_inputs()): name → values, e.g. pooling's offsets.
using IntInputs = std::vector<std::pair<std::string, std::vector<int32_t>>>;

struct OpReport {
  double worst_nmse = 0;      // float vs double, over outputs and gradients
  double worst_element = 0;   // float vs double, element_error's worst
  double worst_fd_error = 0;  // |analytic − numeric| / (1 + |numeric|), double
  std::string worst_nmse_at, worst_element_at, worst_fd_at;
  bool finite = true, guards_intact = true;
  std::string problems;
};

inline double random_in(uint64_t stream, size_t i, double lo, double hi) {
  return lo + (hi - lo) * philox_uniform<double>(0xCA5E, stream, uint32_t(i >> 32), uint32_t(i));
}

// Fills inputs (deterministic per name) and NaN-filled outputs and gradients for one T.
template <class T, class Case>
Buffers<T> make_buffers(const Case& c) {
  Buffers<T> b;
  uint64_t stream = 1;
  for (const BufferSpec& s : c.inputs()) {
    Guarded<T> g(s.size);
    for (size_t i = 0; i < s.size; ++i) g[i] = T(random_in(stream, i, s.lo, s.hi));
    b.real.emplace(s.name, std::move(g));
    if (s.differentiable) b.real.emplace("d" + s.name, Guarded<T>(s.size));
    ++stream;
  }
  for (const BufferSpec& s : c.outputs()) {
    b.real.emplace(s.name, Guarded<T>(s.size));
    Guarded<T> dy(s.size);  // upstream gradient of L
    for (size_t i = 0; i < s.size; ++i) dy[i] = T(random_in(1000 + stream, i, -1, 1));
    if (s.differentiable) b.real.emplace("d" + s.name, std::move(dy));
    ++stream;
  }
  if constexpr (requires { c.int_inputs(); }) {  // optional: index inputs, not differentiated
    for (auto& [name, values] : c.int_inputs()) {
      Guarded<int32_t> g(values.size());
      for (size_t i = 0; i < values.size(); ++i) g[i] = values[i];
      b.ints.emplace(name, std::move(g));
    }
  }
  return b;
}

template <class T, class Case>
void run_case(const Case& c, Buffers<T>& b) {
  c.template forward<T>(b);
  // Backward may consume upstream gradients in place (dense masks dy): run it on a copy.
  Buffers<T> copy = b;
  c.template backward<T>(copy);
  for (const BufferSpec& s : c.inputs())
    if (s.differentiable) b.real.at("d" + s.name) = copy.real.at("d" + s.name);
  for (auto& [name, g] : copy.real)
    if (!g.guards_intact()) b.real.at(name) = g;  // keep a broken guard visible
}

inline double nmse(const double* ref, const double* got, size_t n) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < n; ++i)
    err += (ref[i] - got[i]) * (ref[i] - got[i]), norm += ref[i] * ref[i];
  return norm == 0 ? err : err / norm;
}

// The worst element's error relative to its own magnitude, floored at 1% of the RMS of ref
// (elements near zero carry the rounding of the larger terms they were summed from);
// `where` gets its index.
inline double element_error(const double* ref, const double* got, size_t n, size_t* where) {
  double sq = 0;
  for (size_t i = 0; i < n; ++i) sq += ref[i] * ref[i];
  const double floor = 0.01 * std::sqrt(sq / double(n ? n : 1));
  double worst = 0;
  for (size_t i = 0; i < n; ++i) {
    const double scale = std::fabs(ref[i]) + floor;
    const double e = scale > 0 ? std::fabs(got[i] - ref[i]) / scale : std::fabs(got[i]);
    if (!(e <= worst)) worst = e, *where = i;
    if (std::isnan(e)) return e;  // kept: a later element must not overwrite it
  }
  return worst;
}

template <class Case>
double loss_of(const Case& c, Buffers<double> b) {
  c.template forward<double>(b);
  double L = 0;
  for (const BufferSpec& s : c.outputs()) {
    if (!s.differentiable) continue;
    const Guarded<double>& y = b.real.at(s.name);
    const Guarded<double>& dy = b.real.at("d" + s.name);
    for (size_t i = 0; i < s.size; ++i) L += dy[i] * y[i];
  }
  return L;
}

template <class Case>
OpReport check_op(const Case& c) {
  OpReport report;
  Buffers<double> d = make_buffers<double>(c);
  Buffers<float> f = make_buffers<float>(c);
  run_case(c, d);
  run_case(c, f);

  auto scan = [&](const std::string& name, const auto& g) {
    for (size_t i = 0; i < g.size(); ++i)
      if (!std::isfinite(double(g[i]))) {
        report.finite = false;
        report.problems += name + "[" + std::to_string(i) + "] is not finite; ";
        break;
      }
    if (!g.guards_intact()) {
      report.guards_intact = false;
      report.problems += name + ": write outside its bounds; ";
    }
  };
  for (auto& [name, g] : d.real) scan(name + " (double)", g);
  for (auto& [name, g] : f.real) scan(name + " (float)", g);

  // float vs double on outputs and gradients.
  struct Compared {
    std::string name;
    std::function<bool(size_t)> checked;
    bool elementwise;
  };
  std::vector<Compared> compared;
  for (const BufferSpec& s : c.outputs()) compared.push_back({s.name, nullptr, s.elementwise});
  for (const BufferSpec& s : c.inputs())
    if (s.differentiable) compared.push_back({"d" + s.name, s.checked, s.elementwise});
  for (auto& [name, checked, elementwise] : compared) {
    const Guarded<double>& ref = d.real.at(name);
    const Guarded<float>& got = f.real.at(name);
    std::vector<double> r, g;
    for (size_t i = 0; i < ref.size(); ++i)
      if (!checked || checked(i)) r.push_back(ref[i]), g.push_back(double(got[i]));
    const double e = nmse(r.data(), g.data(), r.size());
    if (!(e <= report.worst_nmse)) report.worst_nmse = e, report.worst_nmse_at = name;
    size_t at = 0;
    const double el = elementwise ? element_error(r.data(), g.data(), r.size(), &at) : 0.0;
    if (!(el <= report.worst_element))
      report.worst_element = el,
      report.worst_element_at = name + "[" + std::to_string(at) + "] (of the compared elements)";
  }

  // Central finite differences of L in double, every checked element of every input.
  const double h = 1e-6;
  Buffers<double> base = make_buffers<double>(c);
  for (const BufferSpec& s : c.inputs()) {
    if (!s.differentiable) continue;
    const Guarded<double>& analytic = d.real.at("d" + s.name);
    for (size_t i = 0; i < s.size; ++i) {
      if (s.checked && !s.checked(i)) continue;
      Buffers<double> plus = base, minus = base;
      plus.real.at(s.name)[i] += h;
      minus.real.at(s.name)[i] -= h;
      const double numeric = (loss_of(c, plus) - loss_of(c, minus)) / (2 * h);
      const double e = std::fabs(analytic[i] - numeric) / (1 + std::fabs(numeric));
      if (!(e <= report.worst_fd_error))
        report.worst_fd_error = e,
        report.worst_fd_at = "d" + s.name + "[" + std::to_string(i) + "]";
    }
  }
  return report;
}

// The bounds every op must meet.
inline void expect_op_ok(const OpReport& r) {
  EXPECT_TRUE(r.finite) << r.problems;
  EXPECT_TRUE(r.guards_intact) << r.problems;
  EXPECT_LE(r.worst_nmse, 1e-7) << "float vs double at " << r.worst_nmse_at;
  EXPECT_LE(r.worst_element, 1e-4) << "float vs double, element " << r.worst_element_at;
  EXPECT_LE(r.worst_fd_error, 1e-6) << "finite differences at " << r.worst_fd_at;
}

}  // namespace equivae::test
