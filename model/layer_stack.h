#pragma once
// A network as a stack of layers — dense, conv2d or conv_transpose2d — with ReLU between them
// and identity at the end. Parameters, gradients, activations are placed in the plan's arena;
// the convolutions' scratch is one workspace the plan shares between all its stacks.
//
// Activations are [rows, features] row-major. An NCHW image batch [N, C, H, W] is the same
// memory as [N, C·H·W] row-major, so a dense layer after a convolution (or before a transposed
// one) reads (writes) the image as a flat feature row: the reshapes cost nothing.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/philox.h"
#include "runtime/arena.h"
#include "runtime/backend.h"
#include "runtime/error.h"

namespace equivae {

enum class LayerKind { dense, conv2d, conv_transpose2d };

// One layer's geometry. in/out are features per row (for a convolution C·H·W of its input and
// output image); conv holds a convolution's shape (its N is set when the stack is placed).
struct LayerSpec {
  LayerKind kind = LayerKind::dense;
  int in = 0, out = 0;
  Conv2dShape conv;

  static LayerSpec dense(int in, int out) {
    LayerSpec s;
    s.in = in;
    s.out = out;
    return s;
  }
  // x[C_in, H, W] → y[C_out, Ho, Wo]; Ho = (H + 2 pad − k) / stride + 1.
  static LayerSpec conv2d(int C_in, int H, int W, int C_out, int k, int stride, int pad) {
    LayerSpec s;
    s.kind = LayerKind::conv2d;
    s.conv = {1, C_in, H, W, C_out, k, k, stride, pad, 0};
    s.in = C_in * H * W;
    s.out =
        C_out * cpu::conv2d_out_size(H, k, stride, pad) * cpu::conv2d_out_size(W, k, stride, pad);
    return s;
  }
  // x[C_in, H, W] → y[C_out, Ho, Wo]; Ho = (H − 1) stride − 2 pad + k + output_padding.
  static LayerSpec conv_transpose2d(int C_in, int H, int W, int C_out, int k, int stride, int pad,
                                    int output_padding = 0) {
    LayerSpec s;
    s.kind = LayerKind::conv_transpose2d;
    s.conv = {1, C_in, H, W, C_out, k, k, stride, pad, output_padding};
    s.in = C_in * H * W;
    s.out = C_out * cpu::conv_transpose2d_out_size(H, k, stride, pad, output_padding) *
            cpu::conv_transpose2d_out_size(W, k, stride, pad, output_padding);
    return s;
  }

  bool convolution() const { return kind != LayerKind::dense; }
  // The weight as the arena holds it, a row-major matrix: dense [in, out] (y = x·W), conv2d
  // [C_out, C_in·KH·KW], conv_transpose2d [C_in, C_out·KH·KW] (kernels/cpu/ops.h's layouts).
  int weight_rows() const {
    if (kind == LayerKind::dense) return in;
    return kind == LayerKind::conv2d ? conv.C_out : conv.C_in;
  }
  int weight_cols() const {
    if (kind == LayerKind::dense) return out;
    return (kind == LayerKind::conv2d ? conv.C_in : conv.C_out) * conv.KH * conv.KW;
  }
  int bias_size() const { return kind == LayerKind::dense ? out : conv.C_out; }
  // The weight's shape in checkpoints: [in, out], [C_out, C_in, KH, KW] or [C_in, C_out, KH, KW].
  std::vector<int64_t> weight_shape() const {
    if (kind == LayerKind::dense) return {in, out};
    return {weight_rows(), kind == LayerKind::conv2d ? conv.C_in : conv.C_out, conv.KH, conv.KW};
  }
  // PyTorch's default initialisation bound 1/√fan_in, fan_in as torch computes it: the input
  // width of nn.Linear, and size(1)·KH·KW of a convolution's weight (for ConvTranspose2d that
  // is C_out·KH·KW).
  int fan_in() const { return kind == LayerKind::dense ? in : weight_cols(); }
};

template <class T>
struct Layer : LayerSpec {
  bool relu = false;
  Tensor<T> W, b;    // weight_rows × weight_cols, [1, bias_size]
  Tensor<T> dW, db;  // same shapes
  Tensor<T> y, dy;   // [rows, out] output (post-activation) and its gradient
  // The ReLU's mask the backend keeps for the layer above (Backend::relu_mask_bytes; its
  // bytes as T elements), or empty.
  Tensor<T> relu_mask;
};

// The rows of a two-input first layer whose a part repeats (the semi-supervised plan: each
// unlabelled item's C rows see the same x, or the same trunk features): a holds each distinct
// row once, and the sets (one member each, and their transpose) map each of the layer's rows
// to its item. The a part's product is then taken once per item and copied out, and its
// gradient summed per item: (C − 1)·U rows fewer in both GEMMs.
template <class T>
struct SharedRows {
  int items = 0;
  const int32_t* offsets = nullptr;      // [rows + 1]
  const int32_t* members = nullptr;      // [rows]: the row's item
  const int32_t* inv_offsets = nullptr;  // [items + 1]
  const int32_t* inv_rows = nullptr;     // [rows]
  T* product = nullptr;                  // [items, out]: a · W[:in_a]
  T* dproduct = nullptr;                 // [items, out]: dz summed per item
};

template <class T>
class LayerStack {
 public:
  // Dense layers of widths = {in, h1, ..., out}. name prefixes the parameter names, numbered
  // from first_index ("finv" → "finv.0.weight"; a second stack of one network continues its
  // numbering).
  LayerStack(std::string name, const std::vector<int>& widths, int first_index = 0)
      : name_(std::move(name)), first_index_(first_index) {
    std::vector<LayerSpec> specs;
    for (size_t l = 0; l + 1 < widths.size(); ++l)
      specs.push_back(LayerSpec::dense(widths[l], widths[l + 1]));
    build(specs);
  }
  // final_relu: a ReLU after the last layer too (a trunk that another stack continues).
  LayerStack(std::string name, const std::vector<LayerSpec>& specs, int first_index = 0,
             bool final_relu = false)
      : name_(std::move(name)), first_index_(first_index) {
    build(specs);
    if (final_relu && !layers_.empty()) layers_.back().relu = true;
  }
  LayerStack(const LayerStack&) = delete;  // the arena holds pointers into layers_
  LayerStack& operator=(const LayerStack&) = delete;

  // Three passes so parameters, gradients and activations each form one contiguous
  // region across all networks of a plan (Adam then runs over one flat buffer).
  void place_parameters(Arena& arena) {
    for (auto& l : layers_)
      arena.place(l.W, l.weight_rows(), l.weight_cols()), arena.place(l.b, 1, l.bias_size());
  }
  void place_gradients(Arena& arena) {
    for (auto& l : layers_)
      arena.place(l.dW, l.weight_rows(), l.weight_cols()), arena.place(l.db, 1, l.bias_size());
  }
  // Activations for `rows` rows; the convolutions' batch is fixed to rows from here on.
  void place_activations(Arena& arena, int rows) {
    rows_ = rows;
    for (auto& l : layers_) {
      l.conv.N = rows;
      arena.place(l.y, rows, l.out), arena.place(l.dy, rows, l.out);
    }
  }
  // The masks the backend keeps for backward() (none on the CPU): one per dense ReLU layer
  // whose backward the layer above finishes. After place_activations.
  void place_relu_masks(Arena& arena, const Backend<T>& be) {
    for (size_t l = 0; l + 1 < layers_.size(); ++l) {
      const size_t bytes =
          finishes_input_relu(l + 1) ? be.relu_mask_bytes(rows_, layers_[l].out) : 0;
      if (bytes > 0) arena.place(layers_[l].relu_mask, 1, int((bytes + sizeof(T) - 1) / sizeof(T)));
    }
  }
  // An inference copy of a network: outputs only (no gradients), for `rows` rows, reading the
  // parameters of `trained` (same layers; its arena must be allocated and outlive this stack).
  void place_inference(Arena& arena, int rows, const LayerStack& trained) {
    if (trained.layers_.size() != layers_.size())
      throw Error(name_, "an inference copy needs the trained stack's layers");
    rows_ = rows;
    for (size_t l = 0; l < layers_.size(); ++l) {
      Layer<T>& layer = layers_[l];
      layer.conv.N = rows;
      layer.W = trained.layers_[l].W;
      layer.b = trained.layers_[l].b;
      arena.place(layer.y, rows, layer.out);
    }
  }
  // Keeps each tensor between two consecutive convolutions in the backend's blocked layout
  // where the backend allows it (Backend::conv_blocked_between): neither side then reorders
  // it. After place_activations or place_inference, before the workspace is sized; for a stack
  // whose intermediate outputs only its own layers read (forward(), backward() and the
  // two-input forms): the last output stays NCHW. Returns how many tensors stay blocked.
  int use_blocked_layouts(Backend<T>& be) {
    int blocked = 0;
    for (size_t l = 0; l + 1 < layers_.size(); ++l) {
      Layer<T>& producer = layers_[l];
      Layer<T>& consumer = layers_[l + 1];
      if (!producer.convolution() || !consumer.convolution()) continue;
      if (!be.conv_blocked_between(producer.conv, producer.kind == LayerKind::conv_transpose2d,
                                   consumer.conv, consumer.kind == LayerKind::conv_transpose2d))
        continue;
      producer.conv.y_blocked = consumer.conv.x_blocked = true;
      ++blocked;
    }
    return blocked;
  }
  // Scratch bytes the stack's convolutions need at the placed rows (0 for a dense stack).
  size_t workspace_bytes(Backend<T>& be) const {
    size_t bytes = 0;
    for (const auto& l : layers_) {
      if (l.kind == LayerKind::conv2d) bytes = std::max(bytes, be.conv2d_workspace_bytes(l.conv));
      if (l.kind == LayerKind::conv_transpose2d)
        bytes = std::max(bytes, be.conv_transpose2d_workspace_bytes(l.conv));
    }
    return bytes;
  }
  // The plan's shared scratch (at least workspace_bytes()); bound when the arena is allocated.
  void use_workspace(const Tensor<T>* workspace) { workspace_ = workspace; }

  // output[B, out] for x[B, in], B ≤ the placed rows. A stack with convolutions always runs
  // all placed rows (their workspace was sized for that batch): rows B.. of x are read and
  // their outputs ignored, so x must span the placed rows.
  const Tensor<T>& forward(Backend<T>& be, const T* x, int B) {
    const int rows = forward_rows(B);
    forward_layer(be, 0, x, rows);
    return forward_layers_above_first(be, rows);
  }
  // Expects output_grad() filled; leaves parameter gradients and, when dx is not null, the
  // input gradient (written).
  void backward(Backend<T>& be, const T* x, int B, T* dx) {
    backward_layers_above_first(be, B);
    backward_layer(be, 0, x, dx, B, /*chained=*/true);
  }

  // A dense first layer fed two inputs [a ; b] (a: its first in_a input columns), without
  // their concatenation. forward_partial issues a · W[:in_a] — beside the ops that follow, on
  // a backend that can (the encoder's W_x·x needs nothing of f_inv) — and forward_rest adds
  // b · W[in_a:], the bias and the ReLU, then runs the layers above. Rows as forward().
  // With shared (else null), a holds each distinct row of the a part once (shared->items
  // rows): its product is taken once per item and copied out to the item's rows.
  void forward_partial(Backend<T>& be, const T* a, int in_a, int B,
                       const SharedRows<T>* shared = nullptr) {
    const Layer<T>& first = first_of_two_inputs(in_a);
    if (!shared) {
      be.dense_forward_partial(first.y.data, a, first.W.data, forward_rows(B), in_a, first.out,
                               nullptr);
      return;
    }
    const RowExpansion<T> expand{shared->product, shared->offsets, shared->members,
                                 forward_rows(B)};
    be.dense_forward_partial(first.y.data, a, first.W.data, shared->items, in_a, first.out,
                             &expand);
  }
  const Tensor<T>& forward_rest(Backend<T>& be, const T* b, int in_a, int B) {
    Layer<T>& first = first_of_two_inputs(in_a);
    const int rows = forward_rows(B);
    be.dense_forward(first.y.data, b, first.W.data + size_t(in_a) * first.out, first.b.data, rows,
                     first.in - in_a, first.out, first.relu, first.relu_mask.data,
                     /*accumulate=*/true);
    return forward_layers_above_first(be, rows);
  }
  // backward() of such a stack: the gradients of W's two row blocks, da (null: none) written,
  // db_input written or, with accumulate_b, added to. With shared (as forward_partial's), a
  // and da hold each item once: the rows' dz are summed per item first.
  void backward_two_inputs(Backend<T>& be, const T* a, const T* b, int in_a, int B, T* da,
                           T* db_input, bool accumulate_b, const SharedRows<T>* shared = nullptr) {
    Layer<T>& first = first_of_two_inputs(in_a);
    backward_layers_above_first(be, B);
    const bool done_above = finishes_input_relu(1);  // dz and the bias gradient
    const size_t rows_b = size_t(in_a) * first.out;  // W[in_a:] starts here
    be.dense_backward(db_input, first.dW.data + rows_b, done_above ? nullptr : first.db.data,
                      first.dy.data, b, first.W.data + rows_b, first.y.data, B, first.in - in_a,
                      first.out, first.relu && !done_above, accumulate_b, {});
    // dy now holds dz.
    T* dz = first.dy.data;
    int rows = B;
    if (shared) {  // dz [B, out] → [items, out]: each item's rows summed
      be.pool_backward(shared->dproduct, dz, shared->offsets, shared->members, shared->inv_offsets,
                       shared->inv_rows, B, shared->items, first.out);
      dz = shared->dproduct;
      rows = shared->items;
    }
    be.dense_backward(da, first.dW.data, nullptr, dz, a, first.W.data, nullptr, rows, in_a,
                      first.out, /*relu=*/false, false, {});
  }
  // Whether, in backward(), layer l finishes the backward's first step of the dense ReLU layer
  // below it (mask and bias gradient: Backend::dense_backward's input_relu), so that the two
  // GEMMs meet with no kernel between them.
  bool finishes_input_relu(size_t l) const {
    return l > 0 && l < layers_.size() && layers_[l].kind == LayerKind::dense &&
           layers_[l - 1].kind == LayerKind::dense && layers_[l - 1].relu;
  }
  // One layer of forward(): y of layer l for `input` over B rows (a convolution always runs
  // all placed rows). For callers that put work between layers (a classifier's dropout); a
  // stack with convolutions should pass all placed rows, as forward() does.
  void forward_layer(Backend<T>& be, size_t l, const T* input, int B) {
    Layer<T>& layer = layers_[l];
    if (layer.kind == LayerKind::dense)
      be.dense_forward(layer.y.data, input, layer.W.data, layer.b.data, B, layer.in, layer.out,
                       layer.relu, layer.relu_mask.data, /*accumulate=*/false);
    else if (layer.kind == LayerKind::conv2d)
      be.conv2d_forward(layer.y.data, input, layer.W.data, layer.b.data, layer.conv, layer.relu,
                        ws(), ws_bytes());
    else
      be.conv_transpose2d_forward(layer.y.data, input, layer.W.data, layer.b.data, layer.conv,
                                  layer.relu, ws(), ws_bytes());
  }
  // One layer of backward(): from layer l's dy, its parameter gradients and, when dinput is not
  // null, the gradient of its input, written (a convolution runs all placed rows). chained:
  // called by backward(), layer after layer, so layer l + 1 may have finished this layer's dz
  // and db, and this one finishes layer l − 1's (finishes_input_relu); a caller with work
  // between layers (dropout) leaves it false.
  void backward_layer(Backend<T>& be, size_t l, const T* input, T* dinput, int B,
                      bool chained = false) {
    Layer<T>& layer = layers_[l];
    if (layer.kind == LayerKind::dense) {
      const bool done_above = chained && finishes_input_relu(l + 1);
      InputRelu<T> below;
      if (chained && finishes_input_relu(l))
        below = {layers_[l - 1].db.data, layers_[l - 1].relu_mask.data};
      be.dense_backward(dinput, layer.dW.data, done_above ? nullptr : layer.db.data, layer.dy.data,
                        input, layer.W.data, layer.y.data, B, layer.in, layer.out,
                        layer.relu && !done_above, false, below);
      return;
    }
    if (B != rows_) throw Error(name_, "backward over other rows than placed");
    if (layer.kind == LayerKind::conv2d)
      be.conv2d_backward(dinput, layer.dW.data, layer.db.data, layer.dy.data, input, layer.W.data,
                         layer.y.data, layer.conv, layer.relu, ws(), ws_bytes());
    else
      be.conv_transpose2d_backward(dinput, layer.dW.data, layer.db.data, layer.dy.data, input,
                                   layer.W.data, layer.y.data, layer.conv, layer.relu, ws(),
                                   ws_bytes());
  }
  Tensor<T>& output_grad() { return layers_.back().dy; }
  const Tensor<T>& output() const { return layers_.back().y; }

  std::vector<Layer<T>>& layers() { return layers_; }
  const std::vector<Layer<T>>& layers() const { return layers_; }
  const std::string& name() const { return name_; }
  // "finv.0" for layer 0 of f_inv: the prefix of its ".weight" / ".bias".
  std::string layer_name(size_t l) const { return name_ + "." + std::to_string(first_index_ + l); }
  bool empty() const { return layers_.empty(); }
  bool convolutional() const { return convolutional_; }
  int rows() const { return rows_; }
  int in() const { return layers_.front().in; }
  int out() const { return layers_.back().out; }

 private:
  // The rows a forward over B rows runs: B, or all placed rows in a stack with convolutions
  // (their workspace was sized for that batch).
  int forward_rows(int B) const {
    if (B > rows_) throw Error(name_, "forward over more rows than placed");
    return convolutional_ ? rows_ : B;
  }
  // forward() from layer 1 up, over rows (forward_rows), layer 0's output in place.
  const Tensor<T>& forward_layers_above_first(Backend<T>& be, int rows) {
    for (size_t l = 1; l < layers_.size(); ++l) forward_layer(be, l, layers_[l - 1].y.data, rows);
    return layers_.back().y;
  }
  // backward() from the top layer down to layer 1, chained.
  void backward_layers_above_first(Backend<T>& be, int B) {
    if (convolutional_ && B != rows_) throw Error(name_, "backward over other rows than placed");
    for (size_t l = layers_.size(); l-- > 1;)
      backward_layer(be, l, layers_[l - 1].y.data, layers_[l - 1].dy.data, B, /*chained=*/true);
  }
  Layer<T>& first_of_two_inputs(int in_a) {
    Layer<T>& first = layers_.front();
    if (first.kind != LayerKind::dense || in_a <= 0 || in_a >= first.in)
      throw Error(name_, "two inputs need a dense first layer and 0 < in_a < its input width");
    return first;
  }
  void build(const std::vector<LayerSpec>& specs) {
    for (size_t l = 0; l < specs.size(); ++l) {
      Layer<T> layer;
      static_cast<LayerSpec&>(layer) = specs[l];
      layer.relu = l + 1 < specs.size();
      if (l > 0 && specs[l - 1].out != specs[l].in)
        throw Error(name_, "layer " + std::to_string(l) + " takes " + std::to_string(specs[l].in) +
                               " features, the layer below gives " +
                               std::to_string(specs[l - 1].out));
      convolutional_ |= layer.convolution();
      layers_.push_back(layer);
    }
  }
  void* ws() const { return workspace_ && workspace_->data ? workspace_->data : nullptr; }
  size_t ws_bytes() const { return workspace_ ? workspace_->size() * sizeof(T) : 0; }

  std::string name_;
  int first_index_ = 0;
  int rows_ = 0;
  bool convolutional_ = false;
  const Tensor<T>* workspace_ = nullptr;
  std::vector<Layer<T>> layers_;
};

// One convolution workspace for stacks placed in the same arena: the largest any of their
// layers asks for, placed as `workspace` and bound to each stack (nothing for dense stacks).
// `where` names the plan in the error of an impossible size.
template <class T>
void place_shared_workspace(Arena& arena, Tensor<T>& workspace,
                            const std::vector<LayerStack<T>*>& stacks, Backend<T>& be,
                            const std::string& where) {
  size_t bytes = 0;
  for (const LayerStack<T>* stack : stacks) bytes = std::max(bytes, stack->workspace_bytes(be));
  if (bytes == 0) return;
  const size_t elements = (bytes + sizeof(T) - 1) / sizeof(T);
  check(elements < size_t(1) << 31, where, "convolution workspace too large");
  arena.place(workspace, 1, int(elements));
  for (LayerStack<T>* stack : stacks) stack->use_workspace(&workspace);
}

// PyTorch's default initialisation (nn.Linear, nn.Conv2d, nn.ConvTranspose2d): W and b ~
// U(±1/√fan_in), drawn in double from Philox (seed, layer_index, row, col) of the weight matrix
// as the arena holds it (the bias is row weight_rows), so float and double plans start
// identical. Uploads to the layer's backend memory.
template <class T>
void initialise_layer(Layer<T>& l, uint64_t seed, uint64_t layer_index, Backend<T>& be) {
  const double bound = 1.0 / std::sqrt(double(l.fan_in()));
  const int rows = l.weight_rows(), cols = l.weight_cols();
  std::vector<T> w(l.W.size()), b(l.b.size());
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j)
      w[size_t(i) * cols + j] =
          T(bound * (2 * philox_uniform<double>(seed, layer_index, i, j) - 1));
  for (int j = 0; j < int(b.size()); ++j)
    b[j] = T(bound * (2 * philox_uniform<double>(seed, layer_index, rows, j) - 1));
  be.upload(l.W.data, w.data(), w.size() * sizeof(T));
  be.upload(l.b.data, b.data(), b.size() * sizeof(T));
}

}  // namespace equivae
