#include "model/resume_state.h"

#include <zlib.h>

#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "model/metrics_log.h"
#include "runtime/error.h"

namespace equivae {
namespace {

// Shortest text that reads back as the same double.
std::string exact(double value) {
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, result.ptr);
}

template <class V>
std::string crc32_hex(const std::vector<V>& values) {
  uLong crc = crc32_z(0L, Z_NULL, 0);
  crc = crc32_z(crc, reinterpret_cast<const Bytef*>(values.data()), values.size() * sizeof(V));
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08lx", static_cast<unsigned long>(crc));
  return buf;
}

void add_data_set(RunIdentity& id, const std::string& name, const Dataset* data) {
  static const Dataset empty;
  const Dataset& d = data ? *data : empty;
  const std::string key = "data." + name, label = name + " set";
  id.push_back({key + ".n", label + " size", std::to_string(d.n)});
  id.push_back({key + ".labels_crc32", label + " labels CRC-32", crc32_hex(d.labels)});
  id.push_back({key + ".images_crc32", label + " images CRC-32", crc32_hex(d.images)});
}

const std::string& metadata(const Checkpoint& checkpoint, const std::string& path,
                            const std::string& key) {
  auto it = checkpoint.metadata.find(key);
  check_resumable(
      it != checkpoint.metadata.end(), path,
      "has no \"" + key +
          "\" in its metadata, so it cannot be resumed (written by an older build or not by "
          "the trainer)");
  return it->second;
}

// The history is an array of flat objects: deeper nesting is malformed, and refused before the
// parser sees it (a crafted file could otherwise nest millions of levels).
bool nested_deeper_than(const std::string& text, int limit) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char ch : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (ch == '\\')
        escaped = true;
      else if (ch == '"')
        in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > limit) return true;
    } else if (ch == ']' || ch == '}') {
      --depth;
    }
  }
  return false;
}

}  // namespace

void check_resumable(bool condition, const std::string& path, const std::string& message) {
  if (!condition) throw Error("", "checkpoint " + path + " " + message);
}

RunIdentity run_identity(const EquiVaeConfig& c, const Dataset& labelled, const Dataset* unlabelled,
                         const Dataset* validation) {
  RunIdentity id;
  auto field = [&](const std::string& name, const std::string& value) {
    id.push_back({"config." + name, name, value});
  };
  field("input_dim", std::to_string(c.input_dim));
  field("hidden", std::to_string(c.hidden));
  field("latent_r", std::to_string(c.latent_r));
  field("latent_v", std::to_string(c.latent_v));
  field("classes", std::to_string(c.classes));
  field("k", std::to_string(c.k));
  field("m_max", std::to_string(c.m_max));
  field("lr", exact(c.lr));
  field("seed", std::to_string(c.seed));
  field("unlabelled", std::to_string(c.unlabelled));
  field("unlabelled_weight", exact(c.unlabelled_weight));
  field("classifier_weight", exact(c.classifier_weight));
  // Added with the convolutional model: a checkpoint without them is a dense Bernoulli run,
  // whose geometry (unused) was the default.
  auto added = [&](const std::string& name, const std::string& value,
                   const std::string& if_absent) {
    id.push_back({"config." + name, name, value, if_absent});
  };
  const EquiVaeConfig defaults;
  added("channels", std::to_string(c.channels), std::to_string(defaults.channels));
  added("height", std::to_string(c.height), std::to_string(defaults.height));
  added("width", std::to_string(c.width), std::to_string(defaults.width));
  added("architecture", architecture_name(c.architecture),
        architecture_name(defaults.architecture));
  added("conv_width", std::to_string(c.conv_width), std::to_string(defaults.conv_width));
  added("likelihood", likelihood_name(c.likelihood), likelihood_name(defaults.likelihood));
  add_data_set(id, "labelled", &labelled);
  add_data_set(id, "unlabelled", unlabelled);
  add_data_set(id, "validation", validation);
  return id;
}

void write_run_identity(Checkpoint& checkpoint, const RunIdentity& identity) {
  for (const RunField& f : identity) checkpoint.metadata[f.key] = f.value;
}

namespace {
// Whether the checkpoint's model is dense (an absent architecture, from before the conv model,
// means dense).
bool checkpoint_says_dense(const Checkpoint& checkpoint) {
  auto it = checkpoint.metadata.find("config.architecture");
  return it == checkpoint.metadata.end() ||
         it->second == architecture_name(EquiVaeConfig{}.architecture);
}
}  // namespace

void check_same_run(const Checkpoint& checkpoint, const std::string& path,
                    const RunIdentity& identity) {
  // A newer format may mean other keys: said first, before any field is compared.
  check_checkpoint_format(checkpoint, path);
  std::string differences;
  // A dense run's checkpoint of an earlier build recorded the default geometry, not its images'
  // (it has no "image_shape"): its input_dim alone says what it took.
  const bool geometry_unrecorded =
      !checkpoint.metadata.count("image_shape") && checkpoint_says_dense(checkpoint);
  for (const RunField& f : identity) {
    if (geometry_unrecorded &&
        (f.key == "config.channels" || f.key == "config.height" || f.key == "config.width"))
      continue;
    auto it = checkpoint.metadata.find(f.key);
    const std::string& written = it == checkpoint.metadata.end() && !f.if_absent.empty()
                                     ? f.if_absent
                                     : metadata(checkpoint, path, f.key);
    if (written == f.value) continue;
    if (!differences.empty()) differences += "; ";
    differences += f.label + " = " + written + ", this run asks for " + f.value;
  }
  check_resumable(differences.empty(), path,
                  "was written with " + differences +
                      " (resuming needs the configuration and data of the run that wrote it)");
}

void write_progress(Checkpoint& checkpoint, const TrainProgress& progress) {
  checkpoint.metadata["epoch"] = std::to_string(progress.epoch);
  checkpoint.metadata["global_step"] = std::to_string(progress.global_step);
  nlohmann::ordered_json history = nlohmann::ordered_json::array();
  for (const EpochRecord& r : progress.history) history.push_back(metrics_json(r));
  checkpoint.metadata["history"] = history.dump();
}

TrainProgress read_progress(const Checkpoint& checkpoint, const std::string& path) {
  auto integer = [&](const std::string& key) {
    const std::string& text = metadata(checkpoint, path, key);
    uint64_t value = 0;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), value);
    check_resumable(r.ec == std::errc() && r.ptr == text.data() + text.size() && !text.empty(),
                    path, "metadata \"" + key + "\" is not a non-negative integer: '" + text + "'");
    return value;
  };
  TrainProgress progress;
  const uint64_t epoch = integer("epoch");
  check_resumable(epoch <= 100000000, path,
                  "metadata \"epoch\" is absurd: " + std::to_string(epoch));
  progress.epoch = int(epoch);
  progress.global_step = integer("global_step");
  const std::string& history_text = metadata(checkpoint, path, "history");
  check_resumable(!nested_deeper_than(history_text, 2), path,
                  "metadata \"history\" is not an array of epoch records");
  const nlohmann::json history = nlohmann::json::parse(history_text, nullptr, false);
  check_resumable(history.is_array(), path, "metadata \"history\" is not a JSON array");
  for (const nlohmann::json& record : history)
    progress.history.push_back(
        epoch_record_from_json(record, "checkpoint " + path + " metadata \"history\""));
  check_resumable(progress.history.size() == epoch, path,
                  "metadata \"history\" holds " + std::to_string(progress.history.size()) +
                      " epochs, \"epoch\" says " + std::to_string(epoch));
  for (size_t e = 0; e < progress.history.size(); ++e)
    check_resumable(progress.history[e].epoch == int(e + 1), path,
                    "metadata \"history\" is out of order at entry " + std::to_string(e + 1));
  return progress;
}

}  // namespace equivae
