#include "runtime/checkpoint_writer.h"

#include <exception>
#include <memory>
#include <utility>

#include "runtime/error.h"

namespace equivae {
namespace {

// An Error's message without its "context: " prefix (the writer names the file itself).
std::string message_of(const Error& e) {
  const std::string text = e.what();
  const std::string prefix = e.context() + ": ";
  return !e.context().empty() && text.rfind(prefix, 0) == 0 ? text.substr(prefix.size()) : text;
}

}  // namespace

CheckpointWriter::~CheckpointWriter() {
  if (pending_.valid()) pending_.wait();
}

void CheckpointWriter::write(const std::string& path, Checkpoint checkpoint,
                             const std::string& what, Refusal refuse) {
  auto shared = std::make_shared<Checkpoint>(std::move(checkpoint));
  write(path, Builder([shared] { return std::move(*shared); }), what, std::move(refuse));
}

void CheckpointWriter::write(const std::string& path, Builder build, const std::string& what,
                             Refusal refuse) {
  wait();
  path_ = path;
  what_ = what;
  pending_ =
      std::async(std::launch::async, [path, build = std::move(build), refuse = std::move(refuse)] {
        const Checkpoint checkpoint = build();
        if (refuse)
          if (const std::string why = refuse(checkpoint); !why.empty()) throw Error(path, why);
        save_checkpoint(path, checkpoint);
      });
}

void CheckpointWriter::wait() {
  if (!pending_.valid()) return;
  const std::string which = "the checkpoint" + (what_.empty() ? "" : " of " + what_);
  try {
    pending_.get();  // rethrows the writer's exception; the future is empty afterwards
  } catch (const Error& e) {
    throw Error(path_, which + " was not written: " + message_of(e));
  } catch (const std::exception& e) {
    throw Error(path_, which + " was not written: " + e.what());
  }
}

}  // namespace equivae
