// What produced a result: every checkpoint records the engine's version (the source tree's git
// state at build time) and its backend's one-line description (device, precision, threads,
// GEMM routes), and neither stops a newer build or another device from resuming it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <regex>
#include <string>

#include "kernels/cpu/ops.h"
#include "model/equivae.h"
#include "model/resume_state.h"
#include "runtime/backend.h"
#include "runtime/build_info.h"
#include "runtime/cuda/cuda_backend.h"
#include "tests/fixtures.h"

namespace equivae {
namespace {

TEST(Provenance, TheEngineVersionIsGitsDescriptionOfTheSourceTree) {
  // `git describe --always --dirty` of the sources' own repository: a tag or a commit, maybe
  // "-dirty"; "unknown" where the sources are not a git checkout or git is not installed.
  const bool checkout = std::filesystem::exists(std::filesystem::path(EQUIVAE_SOURCE_DIR) / ".git");
  const bool git = std::system("git --version > /dev/null 2>&1") == 0;
  if (checkout && git) {
    EXPECT_NE(engine_version(), "unknown");
  }
  EXPECT_TRUE(std::regex_match(engine_version(), std::regex("^[0-9A-Za-z._+-]+$")))
      << engine_version();
}

TEST(Provenance, TheCpuBackendNamesItsThreadsAndGemmRoute) {
  cpu::set_gemm_route(cpu::GemmRoute::openblas);
  auto single = make_cpu_backend<float>(1);
  EXPECT_EQ(single->describe().rfind("cpu, float, 1 thread; GEMMs: OpenBLAS;", 0), 0u)
      << single->describe();
  cpu::set_gemm_route(cpu::GemmRoute::automatic);
  auto reference = make_cpu_backend<double>(1);
  EXPECT_EQ(reference->describe().rfind("cpu, double, 1 thread; GEMMs: OpenBLAS;", 0), 0u)
      << "double always takes OpenBLAS: " << reference->describe();
}

TEST(Provenance, EveryCheckpointSaysWhichEngineAndBackendWroteIt) {
  auto cpu = make_cpu_backend<float>(1);
  auto emulated = make_emulated_cuda_backend<float>();
  for (Backend<float>* backend : {cpu.get(), emulated.get()}) {
    EquiVae<float> model(test::tiny_config(), *backend);
    const Checkpoint ckpt = model.to_checkpoint();
    EXPECT_EQ(ckpt.metadata.at("engine.version"), engine_version());
    EXPECT_EQ(ckpt.metadata.at("engine.backend"), backend->describe());
  }
  EXPECT_NE(emulated->describe().find("cuda, emulated on the CPU; float, TF32 GEMMs"),
            std::string::npos)
      << emulated->describe();
}

TEST(Provenance, AnotherEngineOrBackendStillResumesTheRun) {
  const Dataset data = test::bundled_digits(400);
  auto backend = make_cpu_backend<float>(1);
  EquiVae<float> model(test::tiny_config(), *backend);
  const RunIdentity identity = run_identity(model.config(), data, nullptr, nullptr);
  Checkpoint ckpt = model.to_checkpoint();
  write_run_identity(ckpt, identity);
  ckpt.metadata["engine.version"] = "an-older-build";
  ckpt.metadata["engine.backend"] = "cuda, another GPU; float, TF32 GEMMs";
  EXPECT_NO_THROW(check_same_run(ckpt, "older.safetensors", identity));
  EquiVae<float> resumed(test::tiny_config(), *backend);
  EXPECT_NO_THROW(resumed.load_checkpoint(ckpt, "older.safetensors"));
}

}  // namespace
}  // namespace equivae
