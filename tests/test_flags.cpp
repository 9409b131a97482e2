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

// Every numeric flag reads its value the same strict way: decimal, whole, nothing around it.
TEST(Flags, NumbersAreReadStrictly) {
  for (const char* lr :
       {" 0.001", "0.001 ", "0x1p-10", "+0.001", "1e-3 ", "0.001\n", "inf", "-nan"})
    EXPECT_NE(error_of({"--lr", lr}).find(std::string("--lr: expects a number, got '") + lr + "'"),
              std::string::npos)
        << "'" << lr << "'";
  for (const char* epochs : {" 3", "3 ", "+3", "0x3", "3.0", "3e0", ""})
    EXPECT_NE(error_of({"--epochs", epochs}).find("--epochs: "), std::string::npos) << epochs;
  for (const char* lr : {"0.001", "1e-3", "1E-3", ".5", "1", "10"})
    EXPECT_EQ(error_of({"--lr", lr}), "") << lr;
  EXPECT_EQ(error_of({"--epochs", "0003"}), "");
}

TEST(Flags, ValuesBeyondTheTypeAreOutOfRangeNotMalformed) {
  EXPECT_NE(error_of({"--epochs", "18446744073709551615"})
                .find("--epochs: 18446744073709551615 is out of range: must be an integer in "
                      "[1, 1000]"),
            std::string::npos);
  EXPECT_NE(error_of({"--epochs", "-99999999999999999999"}).find("is out of range"),
            std::string::npos);
  EXPECT_NE(error_of({"--lr", "1e999"}).find("--lr: 1e999 is out of range: must be a number in"),
            std::string::npos);
  EXPECT_NE(error_of({"--epochs", "1001"}).find("--epochs: must be in [1, 1000], got 1001"),
            std::string::npos);
}

TEST(Flags, ParseIntegerIsTheFlagsOwnReading) {
  int64_t v = 0;
  bool beyond = false;
  EXPECT_TRUE(parse_integer("-42", v, &beyond));
  EXPECT_EQ(v, -42);
  EXPECT_FALSE(parse_integer(" 42", v));
  EXPECT_FALSE(parse_integer("42,", v));
  EXPECT_FALSE(parse_integer("", v, &beyond));
  EXPECT_FALSE(beyond);
  EXPECT_FALSE(parse_integer("9223372036854775808", v, &beyond));
  EXPECT_TRUE(beyond);
}

TEST(Flags, HelpListsEveryFlagWithDefaults) {
  const std::string help = declared().help("usage: prog");
  for (const char* name : {"--epochs", "--lr", "--out", "--quiet"})
    EXPECT_NE(help.find(name), std::string::npos) << name;
  EXPECT_NE(help.find("(default: 40)"), std::string::npos);
}

}  // namespace
}  // namespace equivae
