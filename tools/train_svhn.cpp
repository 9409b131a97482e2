// train_svhn: trains the convolutional EquiVAE with a Gaussian likelihood on SVHN
// (train_32x32.mat, test_32x32.mat in --data DIR) on the CPU or a CUDA GPU, with the same
// flags, progress, logs and checkpoints as train_mnist.
#include "tools/train_tool.h"

namespace {

int run(int argc, char** argv) {
  equivae::TrainTool tool;
  tool.usage =
      "usage: train_svhn --data DIR [flags]\n"
      "Trains the convolutional EquiVAE (Gaussian likelihood) on SVHN, supervised or with "
      "--labels N semi-supervised, and prints the distance-classifier test error (and "
      "q(y|x)'s, semi-supervised).\nDIR holds SVHN's train_32x32.mat and test_32x32.mat; the "
      "last 3,257 training images are the validation set (the paper's 70,000 / 3,257).";
  tool.paper = equivae::svhn_paper();
  tool.out = "runs/svhn";
  tool.bundled_data = false;
  tool.validation_help =
      "last N training images held out for validation (auto: 3257 for SVHN, as the paper)";
  return equivae::train_tool(tool, argc, argv);
}

}  // namespace

int main(int argc, char** argv) {
  return equivae::run_tool("train_svhn", run, argc, argv);
}
