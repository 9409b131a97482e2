// The command-line parser: values, switches, ranges, and errors that name the flag.
#include <gtest/gtest.h>

#include "runtime/error.h"
#include "runtime/flags.h"

namespace equivae {
namespace {

Flags declared() {
  Flags f;
  f.add("epochs", "40", "training epochs");
  f.add("lr", "0.001", "learning rate");
  f.add("out", "runs/x", "output directory");
  f.add("quiet", "", "no progress", true);
  return f;
}

std::string error_of(std::vector<const char*> argv) {
  Flags f = declared();
  argv.insert(argv.begin(), "prog");
  try {
    f.parse(int(argv.size()), argv.data());
    f.get_int("epochs", 1, 1000);
    f.get_double("lr", 1e-8, 10);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Flags, ValuesDefaultsAndSwitches) {
  Flags f = declared();
  const char* argv[] = {"prog", "--epochs", "3", "--lr=0.5", "--quiet"};
  f.parse(5, argv);
  EXPECT_EQ(f.get_int("epochs", 1, 100), 3);
  EXPECT_DOUBLE_EQ(f.get_double("lr", 0, 1), 0.5);
  EXPECT_TRUE(f.get_switch("quiet"));
  EXPECT_EQ(f.get("out"), "runs/x");
  EXPECT_FALSE(f.has("out"));
}

TEST(Flags, ErrorsNameTheFlag) {
  EXPECT_NE(error_of({"--epoch", "3"}).find("--epoch: unknown flag"), std::string::npos);
  EXPECT_NE(error_of({"--epochs"}).find("--epochs: needs a value"), std::string::npos);
  EXPECT_NE(error_of({"--epochs", "three"}).find("--epochs: expects an integer, got 'three'"),
            std::string::npos);
  EXPECT_NE(error_of({"--epochs", "0"}).find("--epochs: must be in [1, 1000], got 0"),
            std::string::npos);
  EXPECT_NE(error_of({"--epochs", "2", "--epochs", "3"}).find("given more than once"),
            std::string::npos);
  EXPECT_NE(error_of({"--lr", "nan"}).find("--lr: expects a number"), std::string::npos);
  EXPECT_NE(error_of({"--lr", "1e-3x"}).find("--lr: expects a number"), std::string::npos);
  EXPECT_NE(error_of({"stray"}).find("unexpected argument"), std::string::npos);
  EXPECT_NE(error_of({"--quiet=maybe"}).find("is a switch"), std::string::npos);
  // An empty value (--out "$UNSET") would read as "not given" and drop the run's output.
  EXPECT_NE(error_of({"--out", ""}).find("--out: is empty"), std::string::npos);
  EXPECT_NE(error_of({"--out="}).find("--out: is empty"), std::string::npos);
  EXPECT_EQ(error_of({"--epochs", "7"}), "");
}

TEST(Flags, HelpListsEveryFlagWithDefaults) {
  const std::string help = declared().help("usage: prog");
  for (const char* name : {"--epochs", "--lr", "--out", "--quiet"})
    EXPECT_NE(help.find(name), std::string::npos) << name;
  EXPECT_NE(help.find("(default: 40)"), std::string::npos);
}

}  // namespace
}  // namespace equivae
