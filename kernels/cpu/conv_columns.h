#pragma once
// im2col and col2im for the CPU convolutions (kernels/cpu/conv.cpp): between image planes
// [C, H, W] and columns [C·KH·KW, P], P = Ho·Wo. Row (c, ki, kj), column (oh, ow) of the
// columns holds image pixel (oh·stride − pad + ki, ow·stride − pad + kj), zero outside.
//
// Phases: pixel (i·stride + a, j·stride + b) of the zero-padded plane is pixel (i, j) of phase
// (a, b), a phase being an [Hq, Wq] plane. Row (ki, kj) of the columns is then a plain window
// of phase (ki mod stride, kj mod stride) shifted by (ki / stride, kj / stride): row oh of it
// is Wo consecutive values. Splitting a plane into its phases once (in L1) turns im2col's
// strided gathers into copies of contiguous rows, and col2im's strided read-modify-writes of
// the image into contiguous adds into the phases, merged back into the image in one pass.
//
// The SVHN layers (k 4, stride 2, pad 1, square 4/8/16/32-pixel column sides) take a path
// compiled for their sizes: a window row is then one vector load and store. Measured in
// isolation on the SVHN layers (160 images, one thread), against the strided loops this
// replaced: im2col 4.2 → 0.8 ms, col2im 2.3–2.5 → 1.0 ms per call at 32–128 channels.
#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace equivae::cpu::conv_detail {

struct Geometry {
  int C, H, W, KH, KW, stride, pad, Ho, Wo;
  // Derived by make_geometry: phases along H and W (a stride wider than the kernel leaves
  // some unused), a phase's size (the windows reach row Ho − 1 + (KH − 1) / stride), and
  // the size of one plane's phases.
  int phases_h, phases_w, Hq, Wq;
  size_t phase_plane, phases;

  int K() const { return C * KH * KW; }
  int P() const { return Ho * Wo; }
  size_t plane() const { return size_t(H) * W; }
  // The output positions o whose input o·stride − pad + k lies in [0, n): [lo, hi).
  void valid(int k, int n, int out, int& lo, int& hi) const {
    const int shift = pad - k;  // input = o·stride − shift
    lo = shift <= 0 ? 0 : std::min(out, (shift + stride - 1) / stride);
    const int top = n - 1 + shift;  // o·stride ≤ top
    hi = top < 0 ? 0 : std::min(out, top / stride + 1);
    if (hi < lo) hi = lo;  // none valid (padding wider than the image): lo ≤ hi ≤ out
  }
  // Where phase (a, b) starts in one plane's phases.
  size_t phase(int a, int b) const { return (size_t(a) * phases_w + b) * phase_plane; }
  // The SVHN layout the fast path is compiled for (see with_fixed_sizes).
  bool paired() const {
    // Pixel w = 2t + e (e = 0, 1) of an image row sits at column t + (e + pad) / 2 of its
    // phase, which must lie within the Wq = Wo + (KW − 1) / 2 columns for every t < Wo.
    return stride == 2 && KH >= 2 && KW >= 2 && Ho == Wo && W == 2 * Wo &&
           (pad + 1) / 2 <= (KW - 1) / 2;
  }
};

inline Geometry make_geometry(int C, int H, int W, int KH, int KW, int stride, int pad, int Ho,
                              int Wo) {
  Geometry g{C, H, W, KH, KW, stride, pad, Ho, Wo, 0, 0, 0, 0, 0, 0};
  g.phases_h = std::min(stride, KH);
  g.phases_w = std::min(stride, KW);
  g.Hq = Ho + (KH - 1) / stride;
  g.Wq = Wo + (KW - 1) / stride;
  g.phase_plane = size_t(g.Hq) * g.Wq;
  g.phases = size_t(g.phases_h) * g.phases_w * g.phase_plane;
  return g;
}

// Calls f.template operator()<kWo>() with kWo = Ho = Wo fixed at compile time where the
// geometry is paired() with a side of 4, 8, 16 or 32, else with kWo = 0 (every size taken
// from the geometry at run time).
template <class F>
void with_fixed_sizes(const Geometry& g, F&& f) {
  if (g.paired()) switch (g.Wo) {
      case 4:
        return f.template operator()<4>();
      case 8:
        return f.template operator()<8>();
      case 16:
        return f.template operator()<16>();
      case 32:
        return f.template operator()<32>();
    }
  f.template operator()<0>();
}

// ---- row kernels
// Written so that the compiler moves a row of fixed width kW through vector registers, one
// load and one store: copies by memcpy of a fixed size, adds on local arrays, (de)interleaving
// through __restrict parameters. Through plain pointers it must assume that a store may change
// the next load; it then copied a 4 × 4 window with 16 scalar load/store pairs.

// A window: out[r·ld_out + j] = in[r·ld_in + j] (kAdd: +=) for r < rows, j < kW (or the
// run-time width w when kW = 0).
template <int kW, bool kAdd, class T>
inline void copy_window(T* out, const T* in, int rows, int w, size_t ld_out, size_t ld_in) {
  if constexpr (kW > 0) {
    for (int r = 0; r < rows; ++r) {
      if constexpr (kAdd) {
        T acc[kW], row[kW];
        std::memcpy(acc, out + r * ld_out, sizeof acc);
        std::memcpy(row, in + r * ld_in, sizeof row);
        for (int j = 0; j < kW; ++j) acc[j] += row[j];
        std::memcpy(out + r * ld_out, acc, sizeof acc);
      } else {
        std::memcpy(out + r * ld_out, in + r * ld_in, kW * sizeof(T));
      }
    }
  } else {
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < w; ++j) {
        if constexpr (kAdd)
          out[r * ld_out + j] += in[r * ld_in + j];
        else
          out[r * ld_out + j] = in[r * ld_in + j];
      }
  }
}
// even[t] = in[2t], odd[t] = in[2t + 1] for t < kW.
template <int kW, class T>
inline void deinterleave(T* __restrict even, T* __restrict odd, const T* __restrict in) {
  for (int t = 0; t < kW; ++t) even[t] = in[2 * t], odd[t] = in[2 * t + 1];
}
// out[2t] = act(even[t] + bias), out[2t + 1] = act(odd[t] + bias) for t < kW; act is ReLU
// (NaN propagates) or the identity. Not inlined: inlined into merge_phases, the compiler lost
// the __restrict promises and gathered rows with scalar loads (the merge ran 1.7× slower).
template <int kW, bool kRelu, class T>
[[gnu::noinline]] void interleave(T* __restrict out, const T* __restrict even,
                                  const T* __restrict odd, T bias) {
  for (int t = 0; t < kW; ++t) {
    const T z0 = even[t] + bias, z1 = odd[t] + bias;
    out[2 * t] = kRelu && z0 < T(0) ? T(0) : z0;
    out[2 * t + 1] = kRelu && z1 < T(0) ? T(0) : z1;
  }
}

// ---- one plane

// The paired layout's phase row for the even (e = 0) or odd (e = 1) pixels of padded row
// 2i + a: phase (a, (e + pad) mod 2), from column (e + pad) / 2 on.
template <class T>
T* paired_row(T* phases, const Geometry& g, int a, int i, int e) {
  return phases + g.phase(a, (e + g.pad) % 2) + size_t(i) * g.Wq + (e + g.pad) / 2;
}

// The phases of one image plane [H, W] (zero where they fall in the padding or past the image).
// The paired layout writes only the image's pixels, always to the same places: the caller
// zeroes the buffer before its first plane only (a fill per plane cost ~2% of a step).
template <int kWo, class T>
void split_phases(T* phases, const T* plane, const Geometry& g) {
  if constexpr (kWo > 0) {
    for (int a = 0; a < g.phases_h; ++a)
      for (int i = 0; i < g.Hq; ++i) {
        const int h = 2 * i + a - g.pad;
        if (h >= 0 && h < g.H)
          deinterleave<kWo>(paired_row(phases, g, a, i, 0), paired_row(phases, g, a, i, 1),
                            plane + size_t(h) * g.W);
      }
  } else {
    const int s = g.stride, Hq = g.Hq, Wq = g.Wq;
    for (int a = 0; a < g.phases_h; ++a)
      for (int b = 0; b < g.phases_w; ++b) {
        T* phase = phases + g.phase(a, b);
        int i_lo, i_hi, j_lo, j_hi;
        g.valid(a, g.H, Hq, i_lo, i_hi);
        g.valid(b, g.W, Wq, j_lo, j_hi);
        std::fill_n(phase, size_t(i_lo) * Wq, T(0));
        for (int i = i_lo; i < i_hi; ++i) {
          T* out = phase + size_t(i) * Wq;
          // Image column of phase column j: j·stride − pad + b.
          const T* in = plane + size_t(i * s - g.pad + a) * g.W - g.pad + b;
          for (int j = 0; j < j_lo; ++j) out[j] = T(0);
          for (int j = j_lo; j < j_hi; ++j) out[j] = in[ptrdiff_t(j) * s];
          for (int j = j_hi; j < Wq; ++j) out[j] = T(0);
        }
        std::fill_n(phase + size_t(i_hi) * Wq, size_t(Hq - i_hi) * Wq, T(0));
      }
  }
}

// One image plane [H, W] = act(phases merged back + bias): pixel (h, w) is phase pixel
// ((h + pad) / stride, (w + pad) / stride) of phase ((h + pad) mod stride, (w + pad) mod
// stride); pixels no window reaches get act(bias). act: ReLU (NaN propagates) or identity.
template <int kWo, bool kRelu, class T>
void merge_phases(T* plane, const T* phases, const Geometry& g, T bias) {
  const auto act = [bias](T v) {
    const T z = v + bias;
    return kRelu && z < T(0) ? T(0) : z;
  };
  const int s = kWo > 0 ? 2 : g.stride, Wq = g.Wq;
  const T untouched = act(T(0));
  for (int h = 0; h < g.H; ++h) {
    T* out = plane + size_t(h) * g.W;
    const int a = (h + g.pad) % s, i = (h + g.pad) / s;
    if (a >= g.phases_h || i >= g.Hq) {
      std::fill_n(out, g.W, untouched);
      continue;
    }
    if constexpr (kWo > 0) {
      interleave<kWo, kRelu>(out, paired_row(phases, g, a, i, 0), paired_row(phases, g, a, i, 1),
                             bias);
    } else {
      // Columns w with (w + pad) / stride < Wq: [0, w_end).
      const int w_end = int(std::min<long long>(g.W, 1LL * Wq * s - g.pad));
      for (int b = 0; b < s; ++b) {
        // Columns w ≡ b − pad (mod stride) from w0 on read phase (a, b) at j = (w + pad) / stride.
        const int w0 = ((b - g.pad) % s + s) % s;
        int w = w0;
        if (b < g.phases_w) {
          const T* in = phases + g.phase(a, b) + size_t(i) * Wq + (w0 + g.pad) / s;
          for (; w < w_end; w += s) out[w] = act(*in++);
        }
        for (; w < g.W; w += s) out[w] = untouched;
      }
    }
  }
}

// Calls f(where window (ki, kj) starts in a plane's phases, its row ki·KW + kj) for every
// window in (ki, kj) order, without a division per window.
template <int kWo, class F>
void for_each_window(const Geometry& g, F&& f) {
  const int s = kWo > 0 ? 2 : g.stride;
  for (int ki = 0, a = 0, di = 0; ki < g.KH; ++ki) {
    for (int kj = 0, b = 0, dj = 0; kj < g.KW; ++kj) {
      f(g.phase(a, b) + size_t(di) * g.Wq + dj, ki * g.KW + kj);
      if (++b == s) b = 0, ++dj;
    }
    if (++a == s) a = 0, ++di;
  }
}

// The KH·KW rows of cols (leading dimension ld, from out on) of one image plane [H, W]: its
// phases, then each window copied row by row.
template <int kWo, class T>
void im2col_plane(T* out, size_t ld, T* phases, const T* plane, const Geometry& g) {
  split_phases<kWo>(phases, plane, g);
  const int Ho = kWo ? kWo : g.Ho, Wo = kWo ? kWo : g.Wo;
  for_each_window<kWo>(g, [&](size_t at, int r) {
    copy_window<kWo, false>(out + size_t(r) * ld, phases + at, Ho, Wo, size_t(Wo), size_t(g.Wq));
  });
}

// One image plane [H, W] = act(its KH·KW rows of cols folded back + bias): each window added
// into the zeroed phases row by row in (ki, kj) order (each pixel sums its windows in that
// order), then the phases merged into the plane. (Copying each phase's first window instead
// of zeroing and adding was measured slower.)
template <int kWo, class T>
void col2im_plane(T* plane, T* phases, const T* in, size_t ld, const Geometry& g, T bias,
                  bool relu) {
  std::fill_n(phases, g.phases, T(0));
  const int Ho = kWo ? kWo : g.Ho, Wo = kWo ? kWo : g.Wo;
  for_each_window<kWo>(g, [&](size_t at, int r) {
    copy_window<kWo, true>(phases + at, in + size_t(r) * ld, Ho, Wo, size_t(g.Wq), size_t(Wo));
  });
  if (relu)
    merge_phases<kWo, true>(plane, phases, g, bias);
  else
    merge_phases<kWo, false>(plane, phases, g, bias);
}

// ---- G images
// Planes are shared out among the threads in contiguous runs; each thread splits its planes
// one after the other through its own phase buffer, which then stays in L1 (a buffer per
// plane cost the forward 32→64 conv ~10% in cache misses on the buffers alone).

// The most threads that work on planes at once: the workspace holds phase_buffers() buffers.
constexpr int kMaxPlaneThreads = 64;
inline size_t phase_buffers(const Geometry& g, int G) {
  return std::min<size_t>(size_t(G) * g.C, kMaxPlaneThreads);
}

// f(q, buffer, first) for every plane q < G·C, buffer < phase_buffers(g, G) being the calling
// thread's and first whether q is the first plane it gets; in parallel when the columns are
// large enough to pay for the threads and the caller is not itself one of several threads
// (conv.cpp's lanes).
template <class F>
void for_each_plane(const Geometry& g, int G, F&& f) {
  const int planes = G * g.C;
  const bool parallel = size_t(g.K()) * G * g.P() > 65536 && !omp_in_parallel();
  const int threads = parallel ? std::min(omp_get_max_threads(), int(phase_buffers(g, G))) : 1;
  if (threads <= 1) {
    for (int q = 0; q < planes; ++q) f(q, 0, q == 0);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int lo = int(int64_t(planes) * t / nt), hi = int(int64_t(planes) * (t + 1) / nt);
    for (int q = lo; q < hi; ++q) f(q, t, q == lo);
  }
}

// cols[K, G·P] (leading dimension ld = G·P) from G images of planes [C, H, W]; phases holds
// phase_buffers(g, G) buffers of g.phases elements.
template <class T>
void im2col(T* cols, T* phases, const T* image, int G, const Geometry& g) {
  const int P = g.P(), KK = g.KH * g.KW;
  const size_t ld = size_t(G) * P;
  with_fixed_sizes(g, [&]<int kWo>() {
    for_each_plane(g, G, [&](int q, int buffer, bool first) {
      const int n = q / g.C, c = q % g.C;
      T* ph = phases + size_t(buffer) * g.phases;
      if (kWo > 0 && first) std::fill_n(ph, g.phases, T(0));  // see split_phases
      im2col_plane<kWo>(cols + size_t(c) * KK * ld + size_t(n) * P, ld, ph,
                        image + size_t(q) * g.plane(), g);
    });
  });
}

// G images of planes [C, H, W] = act(the sum of cols[K, G·P] folded back + bias[c])
// (overwritten; a null bias adds none); phases as for im2col.
template <class T>
void col2im(T* image, T* phases, const T* cols, int G, const Geometry& g, const T* bias,
            bool relu) {
  const int P = g.P(), KK = g.KH * g.KW;
  const size_t ld = size_t(G) * P;
  with_fixed_sizes(g, [&]<int kWo>() {
    for_each_plane(g, G, [&](int q, int buffer, bool) {
      const int n = q / g.C, c = q % g.C;
      col2im_plane<kWo>(image + size_t(q) * g.plane(), phases + size_t(buffer) * g.phases,
                        cols + size_t(c) * KK * ld + size_t(n) * P, ld, g, bias ? bias[c] : T(0),
                        relu);
    });
  });
}

}  // namespace equivae::cpu::conv_detail
