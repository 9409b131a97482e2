#pragma once
// What went non-finite when training diverges, for the error that stops it: the loss terms
// of the failing step, and the first parameter, gradient or Adam moment tensor holding a NaN
// or an infinity, by its checkpoint name ("decoder.2.bias").
#include <string>

#include "model/equivae.h"

namespace equivae {

// %g of a value, for the messages; NaN as "nan" whatever its sign bit.
std::string format_number(double value);

// "reconstruction log p(x|r,v) = nan, KL = inf"; empty when every term is finite.
std::string non_finite_loss_terms(const StepMetrics& metrics);

// "parameter decoder.2.bias (element 5 of 784 = nan)", "gradient of finv.0.weight (…)",
// "Adam moment adam.v of finv.0.weight (…)": the first non-finite tensor, scanning the
// parameters, then the gradients of the last backward pass, then Adam's moments, each in
// checkpoint order (a moment's element is named within the parameter it belongs to). Empty
// when all are finite. Reads the whole model back from the backend: for the error path only.
template <class T>
std::string first_non_finite_tensor(EquiVae<T>& model);

// The same over the model's state alone (parameters, then Adam's moments): what an update
// that went non-finite left.
template <class T>
std::string first_non_finite_state(EquiVae<T>& model);

// The same over a checkpoint's state alone (parameters, then Adam's moments, the first
// `parameters` tensors being the parameters), before it is written: a step can leave its loss
// finite and its update not.
std::string first_non_finite_state(const Checkpoint& checkpoint, size_t parameters);

}  // namespace equivae
