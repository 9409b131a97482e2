// Stopping on request (runtime/interrupt.h): the first SIGINT, SIGTERM or SIGHUP only sets the
// flag and says so on stderr (what the tool set to say); a second one ends the process as the
// default action would; the handlers it replaced come back when it goes (an ignored SIGHUP,
// nohup's, stays ignored); two at once are refused. (The training loop's side —
// where the run stops and what it keeps — is in test_resume.cpp.)
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "model/classifier.h"
#include "runtime/backend.h"
#include "runtime/error.h"
#include "runtime/interrupt.h"

namespace equivae {
namespace {

TEST(StopOnSignal, TheFirstSignalOnlyAsksTheRunToStop) {
  for (const int sig : {SIGINT, SIGTERM, SIGHUP}) {
    StopOnSignal stop;
    EXPECT_EQ(StopOnSignal::received(), 0);
    testing::internal::CaptureStderr();
    std::raise(sig);  // the process goes on
    const std::string said = testing::internal::GetCapturedStderr();
    EXPECT_EQ(StopOnSignal::received(), sig);
    EXPECT_NE(said.find("stopping after the current step"), std::string::npos) << said;
    EXPECT_NE(said.find("Ctrl-C again"), std::string::npos) << said;
  }
}

TEST(StopOnSignal, TheNoticeSaysWhatTheToolDoesNext) {
  static const char kNotice[] = "\nstopping before the next pass\n";
  {
    StopOnSignal stop;
    StopOnSignal::set_notice(kNotice);
    testing::internal::CaptureStderr();
    std::raise(SIGINT);
    EXPECT_EQ(testing::internal::GetCapturedStderr(), kNotice);
  }
  StopOnSignal stop;  // a new guard says the training loop's words again
  testing::internal::CaptureStderr();
  std::raise(SIGTERM);
  EXPECT_NE(testing::internal::GetCapturedStderr().find("stopping after the current step"),
            std::string::npos);
}

// Under nohup the run outlives its terminal: the guard leaves an ignored SIGHUP ignored.
TEST(StopOnSignal, AnIgnoredHangupStaysIgnored) {
  const auto previous = std::signal(SIGHUP, SIG_IGN);
  {
    StopOnSignal stop;
    std::raise(SIGHUP);
    EXPECT_EQ(StopOnSignal::received(), 0);
  }
  EXPECT_EQ(std::signal(SIGHUP, previous), SIG_IGN);
}

TEST(StopOnSignal, ASecondSignalEndsTheProcessAtOnce) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        StopOnSignal stop;
        std::raise(SIGINT);
        std::raise(SIGINT);
        std::exit(0);  // not reached
      },
      testing::KilledBySignal(SIGINT), "stopping after the current step");
}

int g_previous_handler_calls = 0;
void previous_handler(int) {
  ++g_previous_handler_calls;
}

TEST(StopOnSignal, TheReplacedHandlersComeBack) {
  struct sigaction mine {
  }, saved{};
  mine.sa_handler = previous_handler;
  sigemptyset(&mine.sa_mask);
  sigaction(SIGTERM, &mine, &saved);
  {
    StopOnSignal stop;
    testing::internal::CaptureStderr();
    std::raise(SIGTERM);
    testing::internal::GetCapturedStderr();
    EXPECT_EQ(g_previous_handler_calls, 0);
  }
  std::raise(SIGTERM);
  EXPECT_EQ(g_previous_handler_calls, 1);
  sigaction(SIGTERM, &saved, nullptr);
}

// A signal sent to the process runs its handler on any thread that does not block it: in a tool,
// the checkpoint writer's, the data loader's or an OpenMP worker's. The training thread polling
// requested() must see the flag set there. The race this guards against (the flag was a
// volatile sig_atomic_t) shows only under ThreadSanitizer: scripts/tsan.sh runs this test so.
TEST(StopOnSignal, ASignalHandledOnAnotherThreadReachesThePollingThread) {
  StopOnSignal stop;
  testing::internal::CaptureStderr();
  std::thread worker([] { std::raise(SIGTERM); });  // raise: the handler runs on this thread
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!StopOnSignal::requested() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  EXPECT_EQ(StopOnSignal::received(), SIGTERM);
  worker.join();
  EXPECT_NE(testing::internal::GetCapturedStderr().find("stopping after the current step"),
            std::string::npos);
}

TEST(StopOnSignal, OneAtATime) {
  StopOnSignal stop;
  EXPECT_THROW(StopOnSignal second, Error);
}

// reproduce's classifiers poll the flag the EquiVAE trainer polls: after a Ctrl-C they take no
// further step and throw Interrupted, which the tool turns into exit status 130.
TEST(StopOnSignal, StopsAClassifierInTraining) {
  std::vector<float> x(600);
  std::vector<int32_t> y(200);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7) / 7;
  for (size_t i = 0; i < y.size(); ++i) y[i] = int32_t(i % 2);
  ClassifierConfig config = neural_classifier_preset();
  config.epochs = 1000;
  auto backend = make_cpu_backend<float>(1);
  MlpClassifier<float> clf(3, 2, config, *backend);
  StopOnSignal stop;
  int steps_before_the_signal = 5;
  auto ask = [&] {
    if (steps_before_the_signal-- == 0) {
      testing::internal::CaptureStderr();
      std::raise(SIGINT);  // the first Ctrl-C only sets the flag
      testing::internal::GetCapturedStderr();
    }
    return StopOnSignal::requested();
  };
  EXPECT_THROW(clf.train(x, y, nullptr, nullptr, ask), Interrupted);
  EXPECT_EQ(clf.adam_steps(), 5);
}

}  // namespace
}  // namespace equivae
