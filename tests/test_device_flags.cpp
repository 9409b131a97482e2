// The device flags' CUDA options (tools/device_flags.h): the backend's defaults where no switch
// is given, each switch its field, and the training-only switches refused by inference tools.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/error.h"
#include "runtime/flags.h"
#include "tools/device_flags.h"

namespace equivae {
namespace {

CudaBackendOptions options_of(std::vector<const char*> argv, bool training = true) {
  Flags f;
  declare_device_flags(f, "auto", training);
  argv.insert(argv.begin(), "tool");
  f.parse(int(argv.size()), argv.data());
  return cuda_options_from_flags(f);
}

TEST(DeviceFlags, NoSwitchKeepsTheBackendsDefaults) {
  const CudaBackendOptions defaults, given = options_of({});
  EXPECT_EQ(given.strict_fp32, defaults.strict_fp32);
  EXPECT_EQ(given.autotune, defaults.autotune);
  EXPECT_EQ(given.small_gemm, defaults.small_gemm);
  EXPECT_EQ(given.conv_gemm, defaults.conv_gemm);
  EXPECT_EQ(given.fused_relu_backward, defaults.fused_relu_backward);
  EXPECT_EQ(given.steps_per_graph, defaults.steps_per_graph);
  EXPECT_EQ(given.programmatic_launch, defaults.programmatic_launch);
  EXPECT_EQ(given.side_conv_filter, defaults.side_conv_filter);
  EXPECT_EQ(given.trunk_beside, defaults.trunk_beside);
  // The defaults an H200 measured faster (docs/cuda-levers.md), which the switches turn off.
  EXPECT_TRUE(defaults.programmatic_launch);
  EXPECT_TRUE(defaults.side_conv_filter);
  EXPECT_TRUE(defaults.trunk_beside);
}

TEST(DeviceFlags, EachSwitchSetsItsOption) {
  const CudaBackendOptions o = options_of(
      {"--strict-fp32", "--autotune", "--small-gemm", "--conv-gemm", "--fused-relu-backward",
       "--steps-per-graph", "4", "--no-programmatic-launch", "--convolutions-in-order"});
  EXPECT_TRUE(o.strict_fp32);
  EXPECT_TRUE(o.autotune);
  EXPECT_TRUE(o.small_gemm);
  EXPECT_TRUE(o.conv_gemm);
  EXPECT_TRUE(o.fused_relu_backward);
  EXPECT_EQ(o.steps_per_graph, 4);
  EXPECT_FALSE(o.programmatic_launch);
  EXPECT_FALSE(o.side_conv_filter);
  EXPECT_FALSE(o.trunk_beside);
  // One at a time: each switch touches only its own options.
  const CudaBackendOptions launch = options_of({"--no-programmatic-launch"});
  EXPECT_FALSE(launch.programmatic_launch);
  EXPECT_TRUE(launch.side_conv_filter && launch.trunk_beside);
  const CudaBackendOptions in_order = options_of({"--convolutions-in-order"});
  EXPECT_TRUE(in_order.programmatic_launch);
  EXPECT_FALSE(in_order.side_conv_filter || in_order.trunk_beside);
  const CudaBackendOptions conv_gemm = options_of({"--conv-gemm"});
  EXPECT_TRUE(conv_gemm.conv_gemm);
  EXPECT_FALSE(conv_gemm.small_gemm);
  EXPECT_TRUE(conv_gemm.side_conv_filter && conv_gemm.trunk_beside);
}

// Every CUDA-only switch is declared for training tools (so the cpu backend's note can name
// each one given), and each is a switch: it takes no value.
TEST(DeviceFlags, TheCudaOnlySwitchesAreDeclared) {
  Flags f;
  declare_device_flags(f, "auto", true);
  for (const char* name : kCudaSwitches) {
    EXPECT_TRUE(f.declared(name)) << name;
    const std::string dashed = std::string("--") + name;
    const char* argv[] = {"tool", dashed.c_str()};
    Flags g;
    declare_device_flags(g, "auto", true);
    g.parse(2, argv);
    EXPECT_TRUE(g.get_switch(name)) << name;
  }
}

TEST(DeviceFlags, InferenceToolsTakeNoTrainingSwitch) {
  EXPECT_TRUE(options_of({"--small-gemm"}, /*training=*/false).small_gemm);
  EXPECT_TRUE(options_of({"--conv-gemm"}, /*training=*/false).conv_gemm);
  for (const char* name :
       {"--no-programmatic-launch", "--convolutions-in-order", "--fused-relu-backward"})
    EXPECT_THROW(options_of({name}, /*training=*/false), Error) << name;
  EXPECT_THROW(options_of({"--steps-per-graph", "0"}), Error) << "out of [1, 64]";
}

}  // namespace
}  // namespace equivae
