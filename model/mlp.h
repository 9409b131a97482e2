#pragma once
// Dense stacks by their older names: an Mlp is a LayerStack of dense layers (built from its
// widths), a DenseLayer one of its layers (model/layer_stack.h).
#include "model/layer_stack.h"

namespace equivae {

template <class T>
using DenseLayer = Layer<T>;
template <class T>
using Mlp = LayerStack<T>;

}  // namespace equivae
