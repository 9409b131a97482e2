#pragma once
// A stack of dense layers (ReLU between, identity at the end) whose parameters,
// gradients and activations are all placed in the plan's arena.
#include <string>
#include <vector>

#include "runtime/arena.h"
#include "runtime/backend.h"

namespace equivae {

template <class T>
struct DenseLayer {
  int in = 0, out = 0;
  bool relu = false;
  Tensor<T> W, b;    // [in,out], [1,out]
  Tensor<T> dW, db;  // same shapes
  Tensor<T> y, dy;   // [B,out] output (post-activation) and its gradient
};

template <class T>
class Mlp {
 public:
  // widths = {in, h1, ..., out}; name prefixes the parameter names ("finv" → "finv.0.weight").
  Mlp(std::string name, std::vector<int> widths) : name_(std::move(name)) {
    for (size_t l = 0; l + 1 < widths.size(); ++l) {
      DenseLayer<T> layer;
      layer.in = widths[l];
      layer.out = widths[l + 1];
      layer.relu = l + 2 < widths.size();
      layers_.push_back(layer);
    }
  }
  Mlp(const Mlp&) = delete;  // the arena holds pointers into layers_
  Mlp& operator=(const Mlp&) = delete;

  // Three passes so parameters, gradients and activations each form one contiguous
  // region across all networks of a plan (Adam then runs over one flat buffer).
  void place_parameters(Arena& arena) {
    for (auto& l : layers_) arena.place(l.W, l.in, l.out), arena.place(l.b, 1, l.out);
  }
  void place_gradients(Arena& arena) {
    for (auto& l : layers_) arena.place(l.dW, l.in, l.out), arena.place(l.db, 1, l.out);
  }
  void place_activations(Arena& arena, int B) {
    for (auto& l : layers_) arena.place(l.y, B, l.out), arena.place(l.dy, B, l.out);
  }

  // output[B, out] for x[B, in]; B may be smaller than the placed batch.
  const Tensor<T>& forward(Backend<T>& be, const T* x, int B) {
    const T* input = x;
    for (auto& l : layers_) {
      be.dense_forward(l.y.data, input, l.W.data, l.b.data, B, l.in, l.out, l.relu);
      input = l.y.data;
    }
    return layers_.back().y;
  }
  // Expects output_grad() filled; leaves parameter gradients and, when dx is not null,
  // the input gradient of columns dx_from.. (written, or added when accumulate_dx).
  void backward(Backend<T>& be, const T* x, int B, T* dx, int dx_from, bool accumulate_dx) {
    for (size_t l = layers_.size(); l-- > 0;) {
      DenseLayer<T>& layer = layers_[l];
      const T* input = l == 0 ? x : layers_[l - 1].y.data;
      T* dinput = l == 0 ? dx : layers_[l - 1].dy.data;
      be.dense_backward(dinput, layer.dW.data, layer.db.data, layer.dy.data, input, layer.W.data,
                        layer.y.data, B, layer.in, layer.out, layer.relu, l == 0 ? dx_from : 0,
                        l == 0 && accumulate_dx);
    }
  }
  Tensor<T>& output_grad() { return layers_.back().dy; }
  const Tensor<T>& output() const { return layers_.back().y; }

  std::vector<DenseLayer<T>>& layers() { return layers_; }
  const std::vector<DenseLayer<T>>& layers() const { return layers_; }
  const std::string& name() const { return name_; }
  int in() const { return layers_.front().in; }
  int out() const { return layers_.back().out; }

 private:
  std::string name_;
  std::vector<DenseLayer<T>> layers_;
};

}  // namespace equivae
