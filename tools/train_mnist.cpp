// train_mnist: trains the supervised EquiVAE on MNIST-format data (the bundled
// 10,000 digits by default) on the CPU or a CUDA GPU and reports the distance-classifier error.
#include "tools/train_tool.h"

namespace {

int run(int argc, char** argv) {
  equivae::TrainTool tool;
  tool.usage =
      "usage: train_mnist [flags]\n"
      "Trains EquiVAE (Feige, ICML 2019), supervised or with --labels N semi-supervised, and "
      "prints the distance-classifier test error (and q(y|x)'s, semi-supervised).\nWithout data "
      "flags it uses the bundled 10,000 MNIST digits: the first 8,000 train, the last 2,000 "
      "test.";
  tool.paper = equivae::mnist_paper();
  tool.out = "runs/mnist";
  tool.bundled_data = true;
  tool.colour_tool = "train_svhn";
  tool.validation_help =
      "last N training examples held out for validation (auto: 0 for the bundled digits, 5000 "
      "for a data directory or IDX files, as the paper's 55k/5k split)";
  return equivae::train_tool(tool, argc, argv);
}

}  // namespace

int main(int argc, char** argv) {
  return equivae::run_tool("train_mnist", run, argc, argv);
}
