#pragma once
// Checkpoints written beside the work that produced them: write() takes a checkpoint already
// in host memory, or a function that makes one from host memory, and saves it with
// save_checkpoint (temp file, fsync, rename, directory fsync: still atomic) on a thread of its
// own while the caller goes on. At most one write is in flight: the next write() and wait()
// wait for it first, and its failure surfaces there, on the caller's thread, as an Error naming
// the file. Until then the previous file at the path stays as it was.
#include <functional>
#include <future>
#include <string>

#include "runtime/checkpoint.h"

namespace equivae {

class CheckpointWriter {
 public:
  CheckpointWriter() = default;
  // Waits for a write in flight; its error, if any, is dropped (wait() first to see it).
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Why a checkpoint must not be written ("" when it may), asked on the writer's thread first.
  using Refusal = std::function<std::string(const Checkpoint&)>;
  // Waits for the previous write (throwing its Error), then starts writing checkpoint to path.
  // what: the checkpoint in an error message ("epoch 3"); empty: none. refuse: a check run on
  // the writer's thread (off the caller's), whose reason fails the write as an error would.
  void write(const std::string& path, Checkpoint checkpoint, const std::string& what = "",
             Refusal refuse = {});
  // The same with the checkpoint made on the writer's thread by build() (whose Error fails the
  // write as a save's would): what build reads must stay unchanged until the write ends.
  using Builder = std::function<Checkpoint()>;
  void write(const std::string& path, Builder build, const std::string& what = "",
             Refusal refuse = {});
  // Waits for the write in flight, if any. Throws Error(path, "the checkpoint of epoch 3 was
  // not written: <why>") when it failed.
  void wait();
  bool in_flight() const { return pending_.valid(); }

 private:
  std::future<void> pending_;
  std::string path_, what_;
};

}  // namespace equivae
