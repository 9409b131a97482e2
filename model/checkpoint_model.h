#pragma once
// A trained model rebuilt from its checkpoint alone, for the tools that use one (figures,
// embed, classify): the configuration comes from the checkpoint's "config" metadata (the
// line EquiVaeConfig::describe() wrote), the weights from its tensors.
#include <memory>
#include <string>

#include "model/config.h"
#include "model/equivae.h"
#include "runtime/backend.h"
#include "runtime/checkpoint.h"

namespace equivae {

// Parses the "config" metadata, and the images' shape from "image_shape" (a dense checkpoint of
// an older build lacks it: its geometry is then 0x0x0, unknown); throws Error naming path when
// the format is unknown or the metadata are missing or malformed.
EquiVaeConfig config_from_checkpoint(const Checkpoint& checkpoint, const std::string& path);

// Reads the checkpoint, builds its model on backend and restores the weights (not Adam's
// moments, which inference does not use: a weights-only file loads); throws Error naming the
// file on an unknown format, bad config metadata, or a missing, misshapen or non-finite
// parameter tensor.
std::unique_ptr<EquiVae<float>> load_model(const std::string& checkpoint_path,
                                           Backend<float>& backend);
// The same from a checkpoint already read (whose metadata the caller keeps as well), with the
// inference plan's chunk rows (EquiVaeConfig::inference_chunk: not a checkpoint's to say).
std::unique_ptr<EquiVae<float>> load_model(const Checkpoint& checkpoint,
                                           const std::string& checkpoint_path,
                                           Backend<float>& backend,
                                           int inference_chunk = EquiVaeConfig{}.inference_chunk);

}  // namespace equivae
