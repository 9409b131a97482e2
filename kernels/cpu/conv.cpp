// 2-D convolution and transposed convolution on im2col + GEMM, forward and backward;
// for float, each op and direction may take oneDNN instead (use_onednn below, conv_onednn.h).
//
// Both ops are written over one "geometry": an image side (planes of C × H × W, the conv's
// input) and a column side (P = Ho × Wo positions, the conv's output), related by the kernel,
// stride and padding. im2col unfolds image planes into cols[C·KH·KW, P]; col2im folds such
// columns back, summing overlaps (kernels/cpu/conv_columns.h). Then, per chunk of G images
// (columns of all G side by side, so that the GEMMs stay wide when P is small):
//   conv2d   forward   cols = im2col(x);        y = W[C_out, K] · cols            (+ b, ReLU)
//            backward  dW += dz · colsᵀ;        dx = col2im(Wᵀ · dz)
//   convT    forward   y = col2im(Wᵀ · x);      (W as [C_in, K], image side = y)  (+ b, ReLU)
//            backward  cols = im2col(dz);  dW += x · colsᵀ;  dx = W · cols
//
// Lanes: chunk i goes to lane i mod L (L = min(chunks, kMaxLanes)); each lane has its own
// workspace and weight-gradient accumulator and runs its chunks in order, and the lanes run
// in parallel, a thread taking the next lane when it is free, with single-threaded GEMMs
// (dense_gemm: oneDNN's one-thread matmul where the GEMM route takes oneDNN — 1.5–1.9× the
// OpenBLAS lanes' speed on the SVHN layers of a Zen 5 EPYC —, else OpenBLAS). The
// accumulators are summed in lane order at the end. Threading whole chunks rather than each
// GEMM saves OpenBLAS's per-call fork/join and its separate pass that zeroes C for beta = 0
// (~14% of the cores' time in a 2-thread SVHN step), and lets one thread's im2col overlap
// another's GEMM. G and L are functions of the shape alone, so the workspace size is too, and
// every sum is taken in an order fixed by the shape: results do not depend on the number of
// threads, nor on which thread runs which lane.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/conv_columns.h"
#include "kernels/cpu/conv_onednn.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/route_choice.h"

namespace equivae::cpu {
namespace {

// Columns per chunk. Measured at the SVHN layers (B = 160, 1 thread, bench_ops): 128 to 512
// columns are about equally fast and 1,024 ~10% slower (cols then spill out of L2 between
// im2col and the GEMM).
constexpr size_t kTargetColumns = 256;
// Lanes at most: the cores of a laptop or a desktop (up to 16 convolve in parallel; with 4
// lanes, as before, a 16-core machine left three quarters of its cores idle in the
// convolutions). Each costs a workspace and, in the backward, a weight-sized accumulator:
// SVHN's largest layer (64 → 128 channels) needs 16.8 MB at B = 160 (10 chunks, so 10 lanes)
// and 27 MB from B = 256 on; 6.4 MB with 4 lanes. On the 2-core development machine 4, 8 and 16
// lanes ran the SVHN step equally fast (109, 111, 110 ms, 4 interleaved runs each).
constexpr int kMaxLanes = 16;

using conv_detail::Geometry;

enum class Direction { forward, backward_data, backward_weights };

// Whether a float op takes oneDNN. Automatic: where it was measured faster (bench_ops
// --benchmark_filter=Conv, B = 160, the SVHN layers, AMD EPYC with AVX-512, one thread):
// every weight gradient (1.4–1.5× im2col's speed); the data gradient when dx has 16 channels
// or more (into SVHN's 3-channel images oneDNN ran 0.7×); every conv's forward (1.1–1.7×);
// of the transposes' forwards only those to 64 channels or more (128 → 64: 1.15×; 64 → 32
// ran 0.86×, 32 → 3 0.45×).
// A shape with a blocked side takes oneDNN in every direction, whatever the route: the tensor
// is already in its layout (conv_blocked_between chose so).
template <class T>
bool use_onednn(const Conv2dShape& s, bool transposed, Direction direction) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    if (s.x_blocked || s.y_blocked) return true;
    const ConvRoute route = conv_route();
    if (route == ConvRoute::im2col || !onednn::available() || !onednn::supports(s, transposed))
      return false;
    if (route == ConvRoute::onednn) return true;
    switch (direction) {
      case Direction::backward_weights:
        return true;
      case Direction::backward_data:
        return s.C_in >= 16;
      case Direction::forward:
        return !transposed || s.C_out >= 64;
    }
    return false;
  }
}

// The gradients of a backward that oneDNN takes; it nulls their pointers, leaving the rest to
// the im2col route.
template <class T>
void onednn_backward(T*& dx, T*& dW, const T* x, const T* dy, const T* W, const Conv2dShape& s,
                     bool transposed, T* workspace) {
  if constexpr (std::is_same_v<T, float>) {
    T* onednn_dW = dW && use_onednn<T>(s, transposed, Direction::backward_weights) ? dW : nullptr;
    T* onednn_dx = dx && use_onednn<T>(s, transposed, Direction::backward_data) ? dx : nullptr;
    if (!onednn_dW && !onednn_dx) return;
    onednn::backward(onednn_dx, onednn_dW, x, dy, W, s, transposed, workspace);
    if (onednn_dW) dW = nullptr;
    if (onednn_dx) dx = nullptr;
  }
}

Geometry conv_geometry(const Conv2dShape& s) {
  return conv_detail::make_geometry(s.C_in, s.H, s.W, s.KH, s.KW, s.stride, s.pad,
                                    conv2d_out_size(s.H, s.KH, s.stride, s.pad),
                                    conv2d_out_size(s.W, s.KW, s.stride, s.pad));
}
// The transpose's image side is its output y; its column side its input x.
Geometry transpose_geometry(const Conv2dShape& s) {
  return conv_detail::make_geometry(
      s.C_out, conv_transpose2d_out_size(s.H, s.KH, s.stride, s.pad, s.output_padding),
      conv_transpose2d_out_size(s.W, s.KW, s.stride, s.pad, s.output_padding), s.KH, s.KW, s.stride,
      s.pad, s.H, s.W);
}

// How a call's N images are cut into chunks and dealt to lanes, and where each lane's scratch
// lies in the workspace (elements of T): per lane cols [K, G·P], a block [C_block, G·P] for
// the GEMMs' other side and phase buffers; then L − 1 weight-gradient accumulators of
// `weights` elements (lane 0 accumulates into dW itself).
struct Chunks {
  int N, P, G, count, lanes;
  size_t K, C_block, phases, weights;

  Chunks(const Geometry& g, int N_, int C_block_, size_t weights_)
      : N(N_), P(g.P()), K(size_t(g.K())), C_block(size_t(C_block_)), weights(weights_) {
    G = int(std::min<size_t>(std::max<size_t>((kTargetColumns + P - 1) / P, 1), size_t(N)));
    count = (N + G - 1) / G;
    lanes = std::min(count, kMaxLanes);
    phases = conv_detail::phase_buffers(g, G) * g.phases;
  }
  size_t columns() const { return size_t(G) * P; }
  size_t lane_size() const { return (K + C_block) * columns() + phases; }
  size_t size() const { return lanes * lane_size() + (lanes - 1) * weights; }

  template <class T>
  T* cols(T* ws, int lane) const {
    return ws + lane * lane_size();
  }
  template <class T>
  T* block(T* ws, int lane) const {
    return cols(ws, lane) + K * columns();
  }
  template <class T>
  T* phase_buffers(T* ws, int lane) const {
    return block(ws, lane) + C_block * columns();
  }
  template <class T>
  T* weight_grad(T* ws, T* dW, int lane) const {
    return lane == 0 ? dW : ws + lanes * lane_size() + (lane - 1) * weights;
  }
  // Whether the chunk at image n0 is its lane's first (its GEMM then overwrites the
  // accumulator).
  bool first_of_lane(int n0) const { return n0 < lanes * G; }

  // f(lane, first image, images) for every chunk: each lane's chunks in order, the lanes in
  // parallel when there are threads for them (handed out as threads free up, so that a core
  // shared with another process holds back one lane rather than half of them).
  template <class F>
  void run(F&& f) const {
    const auto lane = [&](int l) {
      for (int i = l; i < count; i += lanes) f(l, i * G, std::min(G, N - i * G));
    };
    const int threads = std::min(lanes, omp_get_max_threads());
    if (threads <= 1) {
      for (int l = 0; l < lanes; ++l) lane(l);
      return;
    }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int l = 0; l < lanes; ++l) lane(l);
  }
  // dW += the other lanes' accumulators, in lane order.
  template <class T>
  void sum_weight_grads(T* ws, T* dW) const {
    if (lanes == 1) return;
    const T* rest = weight_grad(ws, dW, 1);  // lanes 1.., one after another
#pragma omp parallel for schedule(static) if (weights > 65536)
    for (size_t i = 0; i < weights; ++i) {
      T sum = dW[i];
      for (int l = 1; l < lanes; ++l) sum += rest[(l - 1) * weights + i];
      dW[i] = sum;
    }
  }
};

// Between NCHW images (G of [C, P]) and the GEMMs' channel-major block [C, G·P].
template <class T>
void images_to_block(T* block, const T* images, int G, int C, int P) {
  const size_t ld = size_t(G) * P;
  for (int c = 0; c < C; ++c)
    for (int n = 0; n < G; ++n)
      std::copy_n(images + (size_t(n) * C + c) * P, P, block + size_t(c) * ld + size_t(n) * P);
}
// images = act(block + bias[c]) (a null bias adds none; NaN propagates, as in dense_forward).
template <class T>
void block_to_images(T* images, const T* block, int G, int C, int P, const T* bias = nullptr,
                     bool relu = false) {
  const size_t ld = size_t(G) * P;
  for (int n = 0; n < G; ++n)
    for (int c = 0; c < C; ++c) {
      const T* in = block + size_t(c) * ld + size_t(n) * P;
      T* out = images + (size_t(n) * C + c) * P;
      const T b = bias ? bias[c] : T(0);
      if (relu)
        for (int p = 0; p < P; ++p) {
          const T z = in[p] + b;
          out[p] = z < T(0) ? T(0) : z;
        }
      else
        for (int p = 0; p < P; ++p) out[p] = in[p] + b;
    }
}

constexpr int kMaxChannelBlock = 16;

// The gradient at the op's output, in one pass: with relu, dy[N, C, P] *= (y > 0) in place;
// db[c] = Σ_n Σ_p dy (overwritten; each image's sum added in n order; null: skipped). Each
// thread takes a contiguous range of channels and walks the images in order, so it reads
// memory in order (walking a channel across the images instead took 3% of a backward).
// block > 0: dy and y are blocked, [N, C / block, P, block] (Conv2dShape::y_blocked); the
// threads then take ranges of whole blocks, and each image's sum runs over p in order, block
// channels side by side.
template <class T>
void output_grad(T* dy, T* db, const T* y, int N, int C, int P, bool relu, int block) {
  if (!relu && !db) return;
  const int bk = block > 0 ? block : 1;  // channels per unit of the threads' ranges
  const int units = C / bk;
#pragma omp parallel if (size_t(N) * C * P > 65536)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int u_lo = int(int64_t(units) * t / nt), u_hi = int(int64_t(units) * (t + 1) / nt);
    if (db) std::fill(db + u_lo * bk, db + u_hi * bk, T(0));
    for (int n = 0; n < N && u_lo < u_hi; ++n) {
      const size_t at = (size_t(n) * units + u_lo) * P * bk, count = size_t(u_hi - u_lo) * P * bk;
      T* planes = dy + at;
      if (relu)
        for (size_t i = 0; i < count; ++i) planes[i] = y[at + i] > T(0) ? planes[i] : T(0);
      if (!db) continue;
      for (int u = u_lo; u < u_hi; ++u) {
        const T* unit = dy + (size_t(n) * units + u) * P * bk;
        if (block > 0) {
          T part[kMaxChannelBlock] = {};
          for (int p = 0; p < P; ++p)
#pragma omp simd
            for (int j = 0; j < bk; ++j) part[j] += unit[size_t(p) * bk + j];
          for (int j = 0; j < bk; ++j) db[u * bk + j] += part[j];
          continue;
        }
        T part = T(0);
#pragma omp simd reduction(+ : part)
        for (int p = 0; p < P; ++p) part += unit[p];
        db[u] += part;
      }
    }
  }
}

// The block output_grad sees for a shape's y side (0: NCHW).
int y_block(const Conv2dShape& s) {
  return s.y_blocked ? conv_channel_block() : 0;
}

// A blocked side needs float and a shape oneDNN takes with it (conv_blocked_between).
template <class T>
void check_blocked(const Conv2dShape& s, bool transposed) {
  if (!s.x_blocked && !s.y_blocked) return;
  bool usable = std::is_same_v<T, float>;
  if constexpr (std::is_same_v<T, float>) usable = onednn::supports(s, transposed);
  if (!usable)
    throw std::invalid_argument(
        std::string(transposed ? "conv_transpose2d" : "conv2d") +
        ": a blocked side needs float and oneDNN's route for the shape (conv_blocked_between)");
}

}  // namespace

std::string conv_shape_problem(const Conv2dShape& s, bool transposed) {
  const std::string what = std::string(transposed ? "conv_transpose2d" : "conv2d") +
                           " shape N=" + std::to_string(s.N) + " C_in=" + std::to_string(s.C_in) +
                           " H=" + std::to_string(s.H) + " W=" + std::to_string(s.W) +
                           " C_out=" + std::to_string(s.C_out) + " KH=" + std::to_string(s.KH) +
                           " KW=" + std::to_string(s.KW) + " stride=" + std::to_string(s.stride) +
                           " pad=" + std::to_string(s.pad) +
                           " output_padding=" + std::to_string(s.output_padding) + ": ";
  if (s.N < 1 || s.C_in < 1 || s.H < 1 || s.W < 1 || s.C_out < 1 || s.KH < 1 || s.KW < 1)
    return what + "every size must be at least 1";
  if (s.stride < 1) return what + "stride must be at least 1";
  if (s.pad < 0) return what + "pad must not be negative";
  if (!transposed && s.output_padding != 0) return what + "output_padding is for the transpose";
  if (s.output_padding < 0 || s.output_padding >= s.stride)
    return what + "output_padding must be in [0, stride)";
  // Sizes in 64 bits first: the int formulas below must not overflow.
  const long long big = INT_MAX;
  if (s.H + 2LL * s.pad > big || s.W + 2LL * s.pad > big ||
      (s.H - 1LL) * s.stride + s.KH + s.output_padding > big ||
      (s.W - 1LL) * s.stride + s.KW + s.output_padding > big)
    return what + "sizes overflow int";
  const long long Ho = transposed ? (s.H - 1LL) * s.stride - 2LL * s.pad + s.KH + s.output_padding
                                  : (s.H + 2LL * s.pad - s.KH) / s.stride + 1;
  const long long Wo = transposed ? (s.W - 1LL) * s.stride - 2LL * s.pad + s.KW + s.output_padding
                                  : (s.W + 2LL * s.pad - s.KW) / s.stride + 1;
  if (transposed ? (Ho < 1 || Wo < 1) : (s.H + 2LL * s.pad < s.KH || s.W + 2LL * s.pad < s.KW))
    return what + "the output would be empty (kernel larger than the padded input)";
  const long long in = 1LL * s.N * s.C_in * s.H * s.W, out = 1LL * s.N * s.C_out * Ho * Wo,
                  weight = 1LL * s.C_in * s.C_out * s.KH * s.KW,
                  K = 1LL * (transposed ? s.C_out : s.C_in) * s.KH * s.KW;
  if (in > big || out > big || weight > big || K > big)
    return what + "a tensor exceeds 2^31 elements";
  return "";
}

namespace {
// EQUIVAE_CPU_CONV=auto|im2col|onednn, in ConvRoute's order.
RouteChoice<ConvRoute>& conv_route_choice() {
  static RouteChoice<ConvRoute> choice("EQUIVAE_CPU_CONV", {"auto", "im2col", "onednn"},
                                       "convolution route");
  return choice;
}
}  // namespace

void set_conv_route(ConvRoute route) {
  conv_route_choice().set(route);
}
ConvRoute conv_route_named(const std::string& name) {
  return conv_route_choice().named(name);
}
ConvRoute conv_route() {
  return conv_route_choice().get();
}

bool onednn_built() {
  return onednn::available();
}

int conv_channel_block() {
  return onednn::channel_block();
}

template <class T>
bool conv_blocked_between(const Conv2dShape& producer, bool producer_transposed,
                          const Conv2dShape& consumer, bool consumer_transposed) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    const int block = conv_channel_block();
    if (block == 0 || conv_route() == ConvRoute::im2col) return false;
    if (producer.N != consumer.N || producer.C_out != consumer.C_in ||
        conv_out_h(producer, producer_transposed) != consumer.H ||
        conv_out_w(producer, producer_transposed) != consumer.W || consumer.C_in % block != 0)
      return false;
    // Where the route would give a direction that touches the tensor to im2col (measured
    // faster there), the tensor stays NCHW: the reorders it saves cost less than the route.
    Conv2dShape p = producer, c = consumer;
    p.x_blocked = p.y_blocked = c.x_blocked = c.y_blocked = false;
    if (!use_onednn<T>(p, producer_transposed, Direction::forward) ||
        !use_onednn<T>(p, producer_transposed, Direction::backward_weights) ||
        !use_onednn<T>(c, consumer_transposed, Direction::forward) ||
        !use_onednn<T>(c, consumer_transposed, Direction::backward_weights) ||
        !use_onednn<T>(c, consumer_transposed, Direction::backward_data))
      return false;
    p = producer, c = consumer;
    p.y_blocked = c.x_blocked = true;
    return onednn::supports(p, producer_transposed) && onednn::supports(c, consumer_transposed);
  }
}
template bool conv_blocked_between<float>(const Conv2dShape&, bool, const Conv2dShape&, bool);
template bool conv_blocked_between<double>(const Conv2dShape&, bool, const Conv2dShape&, bool);

// Elements of T: the im2col route's chunks, or oneDNN's operands and scratchpad in floats.
size_t conv2d_workspace_size(const Conv2dShape& s) {
  const Geometry g = conv_geometry(s);
  return std::max(Chunks(g, s.N, s.C_out, size_t(s.C_out) * g.K()).size(),
                  (onednn::workspace_bytes(s, false) + sizeof(float) - 1) / sizeof(float));
}

size_t conv_transpose2d_workspace_size(const Conv2dShape& s) {
  const Geometry g = transpose_geometry(s);
  return std::max(Chunks(g, s.N, s.C_in, size_t(s.C_in) * g.K()).size(),
                  (onednn::workspace_bytes(s, true) + sizeof(float) - 1) / sizeof(float));
}

template <class T>
void conv2d_forward(T* y, const T* x, const T* W, const T* b, const Conv2dShape& s, bool relu,
                    T* workspace) {
  check_blocked<T>(s, false);
  if (use_onednn<T>(s, false, Direction::forward)) {
    if constexpr (std::is_same_v<T, float>) onednn::forward(y, x, W, b, s, false, relu, workspace);
    return;
  }
  const Geometry g = conv_geometry(s);
  const Chunks chunks(g, s.N, s.C_out, size_t(s.C_out) * g.K());
  const int K = g.K(), P = g.P();
  chunks.run([&](int lane, int n0, int n) {
    T* cols = chunks.cols(workspace, lane);  // [K, n·P]
    T* out = chunks.block(workspace, lane);  // [C_out, n·P]
    const int ld = n * P;
    conv_detail::im2col(cols, chunks.phase_buffers(workspace, lane),
                        x + size_t(n0) * s.C_in * g.plane(), n, g);
    dense_gemm(CblasNoTrans, CblasNoTrans, s.C_out, ld, K, W, K, cols, ld, T(0), out, ld);
    block_to_images(y + size_t(n0) * s.C_out * P, out, n, s.C_out, P, b, relu);
  });
}

template <class T>
void conv2d_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y,
                     const Conv2dShape& s, bool relu, T* workspace) {
  check_blocked<T>(s, false);
  const Geometry g = conv_geometry(s);
  const Chunks chunks(g, s.N, s.C_out, size_t(s.C_out) * g.K());
  const int K = g.K(), P = g.P();
  output_grad(dy, db, y, s.N, s.C_out, P, relu, y_block(s));
  onednn_backward(dx, dW, x, dy, W, s, false, workspace);
  if (!dW && !dx) return;
  chunks.run([&](int lane, int n0, int n) {
    T* cols = chunks.cols(workspace, lane);  // [K, n·P]: im2col(x), then Wᵀ·dz
    T* dz = chunks.block(workspace, lane);   // [C_out, n·P]
    const int ld = n * P;
    images_to_block(dz, dy + size_t(n0) * s.C_out * P, n, s.C_out, P);
    if (dW) {
      conv_detail::im2col(cols, chunks.phase_buffers(workspace, lane),
                          x + size_t(n0) * s.C_in * g.plane(), n, g);
      dense_gemm(CblasNoTrans, CblasTrans, s.C_out, K, ld, dz, ld, cols, ld,
                 chunks.first_of_lane(n0) ? T(0) : T(1), chunks.weight_grad(workspace, dW, lane),
                 K);
    }
    if (dx) {
      dense_gemm(CblasTrans, CblasNoTrans, K, ld, s.C_out, W, K, dz, ld, T(0), cols, ld);
      conv_detail::col2im<T>(dx + size_t(n0) * s.C_in * g.plane(),
                             chunks.phase_buffers(workspace, lane), cols, n, g, nullptr, false);
    }
  });
  if (dW) chunks.sum_weight_grads(workspace, dW);
}

template <class T>
void conv_transpose2d_forward(T* y, const T* x, const T* W, const T* b, const Conv2dShape& s,
                              bool relu, T* workspace) {
  check_blocked<T>(s, true);
  if (use_onednn<T>(s, true, Direction::forward)) {
    if constexpr (std::is_same_v<T, float>) onednn::forward(y, x, W, b, s, true, relu, workspace);
    return;
  }
  const Geometry g = transpose_geometry(s);
  const Chunks chunks(g, s.N, s.C_in, size_t(s.C_in) * g.K());
  const int K = g.K(), P = g.P();
  chunks.run([&](int lane, int n0, int n) {
    T* cols = chunks.cols(workspace, lane);  // [K, n·P] = Wᵀ · x
    T* in = chunks.block(workspace, lane);   // [C_in, n·P]
    const int ld = n * P;
    images_to_block(in, x + size_t(n0) * s.C_in * P, n, s.C_in, P);
    dense_gemm(CblasTrans, CblasNoTrans, K, ld, s.C_in, W, K, in, ld, T(0), cols, ld);
    conv_detail::col2im(y + size_t(n0) * s.C_out * g.plane(), chunks.phase_buffers(workspace, lane),
                        cols, n, g, b, relu);
  });
}

template <class T>
void conv_transpose2d_backward(T* dx, T* dW, T* db, T* dy, const T* x, const T* W, const T* y,
                               const Conv2dShape& s, bool relu, T* workspace) {
  check_blocked<T>(s, true);
  const Geometry g = transpose_geometry(s);
  const Chunks chunks(g, s.N, s.C_in, size_t(s.C_in) * g.K());
  const int K = g.K(), P = g.P();
  output_grad(dy, db, y, s.N, s.C_out, int(g.plane()), relu, y_block(s));
  onednn_backward(dx, dW, x, dy, W, s, true, workspace);
  if (!dW && !dx) return;
  chunks.run([&](int lane, int n0, int n) {
    T* cols = chunks.cols(workspace, lane);    // [K, n·P] = im2col(dz)
    T* block = chunks.block(workspace, lane);  // [C_in, n·P]: x, then dx
    const int ld = n * P;
    conv_detail::im2col(cols, chunks.phase_buffers(workspace, lane),
                        dy + size_t(n0) * s.C_out * g.plane(), n, g);
    if (dW) {
      images_to_block(block, x + size_t(n0) * s.C_in * P, n, s.C_in, P);
      dense_gemm(CblasNoTrans, CblasTrans, s.C_in, K, ld, block, ld, cols, ld,
                 chunks.first_of_lane(n0) ? T(0) : T(1), chunks.weight_grad(workspace, dW, lane),
                 K);
    }
    if (dx) {
      dense_gemm(CblasNoTrans, CblasNoTrans, s.C_in, ld, K, W, K, cols, ld, T(0), block, ld);
      block_to_images(dx + size_t(n0) * s.C_in * P, block, n, s.C_in, P);
    }
  });
  if (dW) chunks.sum_weight_grads(workspace, dW);
}

#define INSTANTIATE(T)                                                                             \
  template void conv2d_forward<T>(T*, const T*, const T*, const T*, const Conv2dShape&, bool, T*); \
  template void conv2d_backward<T>(T*, T*, T*, T*, const T*, const T*, const T*,                   \
                                   const Conv2dShape&, bool, T*);                                  \
  template void conv_transpose2d_forward<T>(T*, const T*, const T*, const T*, const Conv2dShape&,  \
                                            bool, T*);                                             \
  template void conv_transpose2d_backward<T>(T*, T*, T*, T*, const T*, const T*, const T*,         \
                                             const Conv2dShape&, bool, T*);
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace equivae::cpu
