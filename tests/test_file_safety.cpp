// What stands at the paths the tools read and write (runtime/path_checks.h): a FIFO, a device
// node or a directory as an input is refused at once, naming it, instead of hanging or failing
// obscurely; an atomic write refuses to replace one; an output that is an input is named with
// both flags; partial temp files of dead processes are found and removed; a JSON log whose
// reader went away is dropped with a note, not the run; the data error says why a directory
// was not read as SVHN's.
#include <fcntl.h>
#include <stdio_ext.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "model/data_splits.h"
#include "model/idx_dataset.h"
#include "model/metrics_log.h"
#include "model/svhn_dataset.h"
#include "runtime/atomic_file.h"
#include "runtime/checkpoint.h"
#include "runtime/error.h"
#include "runtime/output_dir.h"
#include "runtime/path_checks.h"
#include "runtime/png_image.h"
#include "tests/scratch_files.h"

namespace equivae {
namespace {

namespace fs = std::filesystem;

class FileSafety : public test::ScratchDirTest {
 protected:
  FileSafety() : ScratchDirTest("file_safety_") {}
  std::string fifo(const std::string& name) const {
    const std::string p = path(name);
    EXPECT_EQ(::mkfifo(p.c_str(), 0600), 0) << p;
    return p;
  }
};

// The error `action` throws ("" for none). A call that waits on the FIFO (the fault under test)
// is released after 5 s by opening the FIFO's other end, so that it fails instead of hanging.
std::string error_of(const std::function<void()>& action, const std::string& fifo = "") {
  std::atomic<bool> done{false};
  std::thread release([&] {
    for (int i = 0; i < 100 && !done; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (done || fifo.empty()) return;
    const int fd = ::open(fifo.c_str(), O_RDWR | O_NONBLOCK);  // both ends: wakes either side
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (fd >= 0) ::close(fd);
  });
  std::string message;
  try {
    action();
  } catch (const std::exception& e) {
    message = e.what();
  }
  done = true;
  release.join();
  return message;
}

TEST_F(FileSafety, AFifoAsAnInputIsRefusedAtOnceNamingIt) {
  const std::string f = fifo("input");
  const std::string refused = f + ": cannot open: is a FIFO (named pipe), not a regular file";
  EXPECT_EQ(error_of([&] { load_checkpoint(f); }, f), refused);
  EXPECT_EQ(error_of([&] { load_idx_images(f); }, f), refused);
  EXPECT_EQ(error_of([&] { load_svhn_mat(f); }, f), refused);
  EXPECT_EQ(error_of([&] { read_png(f); }, f), refused);
  // Through a symbolic link, the link and what it leads to are said.
  const std::string link = path("link");
  fs::create_symlink(f, link);
  EXPECT_EQ(error_of([&] { load_checkpoint(link); }, f),
            link + ": cannot open: is a symbolic link to " + f +
                ", which is a FIFO (named pipe), not a regular file");
}

TEST_F(FileSafety, AnAtomicWriteDoesNotReplaceAFifoOrADevice) {
  const std::string f = fifo("out.csv");
  EXPECT_EQ(error_of([&] { write_file_atomically(f, "x", 1); }),
            f + ": is a FIFO (named pipe), not a regular file: the output cannot take its place; "
                "name another path or move it away");
  EXPECT_TRUE(fs::is_fifo(fs::symlink_status(f)));
  const std::string null = path("null");
  fs::create_symlink("/dev/null", null);
  EXPECT_NE(error_of([&] {
              write_file_atomically(null, "x", 1);
            }).find("is a symbolic link to /dev/null, which is a character device"),
            std::string::npos);
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(null)));
  // As root, a device node of its own (what the tester's `classify --out` replaced).
  const std::string node = path("node");
  if (::mknod(node.c_str(), S_IFCHR | 0600, makedev(1, 3)) == 0) {
    EXPECT_NE(error_of([&] { write_file_atomically(node, "x", 1); }).find("a character device"),
              std::string::npos);
    EXPECT_TRUE(fs::is_character_file(fs::symlink_status(node)));
  }
  EXPECT_FALSE(fs::exists(f + ".tmp." + std::to_string(::getpid())));
}

TEST_F(FileSafety, AnOutputThatIsAnInputIsNamedWithBothFlags) {
  const std::string input = write("images", {1, 2, 3});
  fs::create_directories(path("sub"));
  const std::string roundabout = path("sub/../images");
  EXPECT_TRUE(same_file(input, roundabout));
  EXPECT_TRUE(same_file(path("new.csv"), path("sub/../new.csv")));  // neither exists yet
  EXPECT_FALSE(same_file(input, path("new.csv")));
  EXPECT_EQ(error_of([&] {
              check_not_an_input({"--out", roundabout},
                                 {{"--checkpoint", path("ck")}, {"--images", input}});
            }),
            "--out: " + roundabout + " is the same file as --images " + input +
                ": writing it would destroy that input; name another file");
  check_not_an_input({"--out", path("new.csv")}, {{"--images", input}, {"--labels", ""}});
}

TEST_F(FileSafety, PartialTempFilesOfDeadProcessesAreRemoved) {
  const std::string dead = write("checkpoint.safetensors.tmp.999999999", {1});
  const std::string mine = write("checkpoint.safetensors.tmp." + std::to_string(::getpid()), {1});
  const std::string live = write("checkpoint.safetensors.tmp.1", {1});  // init runs
  const std::string other = write("notes.txt.tmp.999999999", {1});
  const std::string not_a_pid = write("checkpoint.safetensors.tmp.12ab", {1});
  EXPECT_EQ(remove_stale_temp_files(dir_.string(), {"checkpoint.safetensors", "metrics.csv"}),
            std::vector<std::string>{dead});
  for (const std::string& kept : {mine, live, other, not_a_pid}) EXPECT_TRUE(fs::exists(kept));
}

// A writer's PID means nothing in another PID namespace sharing the directory (a container,
// NFS): the lock each writer holds on its temp file until the rename says it is live.
TEST_F(FileSafety, ATempFileWhoseWriterHoldsItsLockIsKeptWhateverItsPid) {
  const std::string target = path("checkpoint.safetensors");
  const std::string foreign = target + ".tmp.999999999";  // no such process here
  AtomicFileWriter writer(target);
  ASSERT_TRUE(writer.write("abc", 3));
  fs::rename(writer.temp_path(), foreign);  // the lock goes along
  EXPECT_TRUE(remove_stale_temp_files(dir_.string(), {"checkpoint.safetensors"}).empty());
  EXPECT_TRUE(fs::exists(foreign)) << "a live writer's temp file was removed";
  fs::rename(foreign, writer.temp_path());
  writer.commit();  // the lock lasts until the rename: then nothing is left to remove
  EXPECT_TRUE(remove_stale_temp_files(dir_.string(), {"checkpoint.safetensors"}).empty());
  std::string written;
  std::getline(std::ifstream(target), written);
  EXPECT_EQ(written, "abc");

  // A second writer of the same name (another PID namespace's process with the same PID, here
  // this process) finds the lock and stops, leaving the first one's bytes whole.
  {
    AtomicFileWriter first(target);
    ASSERT_TRUE(first.write("first", 5));
    EXPECT_NE(error_of([&] {
                AtomicFileWriter second(target);
              }).find(target + ": another writer is writing it"),
              std::string::npos);
    first.commit();
  }
  std::getline(std::ifstream(target), written);
  EXPECT_EQ(written, "first");

  // The writer gone (its lock with it), the same name is stale.
  const std::string dead = write("checkpoint.safetensors.tmp.999999999", {1});
  EXPECT_EQ(remove_stale_temp_files(dir_.string(), {"checkpoint.safetensors"}),
            std::vector<std::string>{dead});
}

// A tool creates its output directory before its work and writes at the end: a failure in
// between removes what it created (empty directories only), not what was there before.
TEST_F(FileSafety, AFailedToolLeavesNoOutputDirectoryBehind) {
  const std::string outer = path("outer"), inner = outer + "/inner";
  try {
    const ScopedOutputDirectory out(inner + "/", "--out");
    EXPECT_TRUE(fs::is_directory(inner));
    throw Error("checkpoint", "unreadable");
  } catch (const Error&) {
  }
  EXPECT_FALSE(fs::exists(outer)) << "both levels it made are gone";
  EXPECT_TRUE(fs::is_directory(dir_)) << "the directory that held them stays";
  try {
    const ScopedOutputDirectory out(path("detour/../landed"), "--out");  // makes detour too
    EXPECT_TRUE(fs::is_directory(path("detour")) && fs::is_directory(path("landed")));
    throw Error("checkpoint", "unreadable");
  } catch (const Error&) {
  }
  EXPECT_FALSE(fs::exists(path("detour")) || fs::exists(path("landed")));

  fs::create_directories(outer);
  try {
    ScopedOutputDirectory made(inner, "--out");
    const ScopedOutputDirectory moved = std::move(made);  // as output_directory returns it
    std::ofstream(inner + "/r.npy") << "written";
    throw Error("embed", "failed after its first file");
  } catch (const Error&) {
  }
  EXPECT_TRUE(fs::exists(inner + "/r.npy")) << "a directory holding a file is kept";

  { const ScopedOutputDirectory fine(path("fine/figures"), "--out"); }
  EXPECT_TRUE(fs::is_directory(path("fine/figures"))) << "kept when the tool succeeded";
  EXPECT_NE(error_of([&] {
              ScopedOutputDirectory(inner + "/r.npy/x", "--out");
            }).find("--out: " + inner + "/r.npy: is a file, not a directory"),
            std::string::npos);
}

TEST_F(FileSafety, AJsonLogWhoseReaderWentAwayIsDroppedWithANote) {
  // stdout is a pipe whose read end is closed: the write fails with EPIPE (SIGPIPE ignored, as
  // the tools ignore it).
  int ends[2];
  ASSERT_EQ(::pipe(ends), 0);
  ::close(ends[0]);
  const auto old_pipe = std::signal(SIGPIPE, SIG_IGN);
  std::fflush(stdout);
  const int saved_stdout = ::dup(STDOUT_FILENO);
  ::dup2(ends[1], STDOUT_FILENO);
  ::close(ends[1]);
  const std::string csv = path("metrics.csv");
  std::string said, error;
  {
    MetricsLog log(csv, "-", {});
    EpochRecord record;
    testing::internal::CaptureStderr();
    for (int epoch = 1; epoch <= 3; ++epoch) {
      record.epoch = epoch;
      error += error_of([&] { log.append(record); });
    }
    said = testing::internal::GetCapturedStderr();
  }
  __fpurge(stdout);  // what the failed flush left: not for the real stdout
  std::clearerr(stdout);
  ::dup2(saved_stdout, STDOUT_FILENO);
  ::close(saved_stdout);
  std::signal(SIGPIPE, old_pipe);
  EXPECT_EQ(error, "");
  EXPECT_EQ(said,
            "note: cannot write the JSON lines to stdout: its reader went away; training "
            "goes on without them; the epochs are still logged in " +
                csv + "\n");
  std::ifstream in(csv);
  int lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  EXPECT_EQ(lines, 4);  // the header and every epoch
}

TEST_F(FileSafety, AJsonLogFifoThatNoProcessReadsIsRefused) {
  const std::string f = fifo("log");
  EXPECT_EQ(error_of([&] { MetricsLog(path("metrics.csv"), f, {}); }, f),
            f + ": cannot open for writing: is a FIFO (named pipe) that no process reads");
}

// A reader that stops at the first end-of-file (cat, jq) gets every line: the refusal's probe
// of the FIFO stays open until the log's own stream is, so the pipe is never without a writer
// in between (closed early, the reader went and the log's open waited forever: 1 tool run in
// 15, here round 233 of 300).
// Each round in a child process, so that a hang fails the test rather than stalling it.
TEST_F(FileSafety, AJsonLogFifoWithAReaderThatStopsAtEndOfFileGetsEveryLine) {
  const std::string f = fifo("read");
  for (int round = 0; round < 300; ++round) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::alarm(10);  // a hang ends the child with SIGALRM
      std::thread reader([&] {
        const int fd = ::open(f.c_str(), O_RDONLY);
        char buffer[4096];
        while (fd >= 0 && ::read(fd, buffer, sizeof buffer) > 0) {
        }
        if (fd >= 0) ::close(fd);
      });
      // Until the reader waits in its open, the log is refused as having none: try again.
      for (int attempt = 0;; ++attempt) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1 + round % 4));
        try {
          MetricsLog log(path("metrics.csv"), f, {});
          log.append(EpochRecord{});
          break;
        } catch (const Error&) {
          if (attempt == 1000) ::_exit(3);
        }
      }
      reader.join();
      ::_exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "round " << round << ": the log's open waited for a reader that had gone (status "
        << status << ")";
  }
}

TEST_F(FileSafety, ADataDirectoryThatIsNotSvhnsSaysWhy) {
  fs::create_directories(path("data/train_32x32.mat"));
  DataSource source;
  source.directory = path("data");
  const std::string message = error_of([&] { load_splits(source); });
  EXPECT_NE(message.find("missing train-images-idx3-ubyte"), std::string::npos) << message;
  EXPECT_NE(message.find("; train_32x32.mat is there but is a directory, not a regular file, so "
                         "it was not read as SVHN's"),
            std::string::npos)
      << message;
  // A dangling link in an MNIST file's place is named as one.
  fs::create_directories(path("mnist"));
  fs::create_symlink(path("gone"), path("mnist/train-images-idx3-ubyte.gz"));
  EXPECT_NE(error_of([&] { find_mnist_files(path("mnist")); })
                .find("; train-images-idx3-ubyte.gz is there but is a dangling symbolic link to " +
                      path("gone")),
            std::string::npos);
}

}  // namespace
}  // namespace equivae
