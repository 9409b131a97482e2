#pragma once
// What an equivae::Error says: the message a call throws, and the check that a call throws one
// holding given parts.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <initializer_list>
#include <string>

#include "runtime/error.h"

namespace equivae::test {

// The message of the equivae::Error (or the E) that f throws, or "(no error)" when it returns.
template <class E = Error, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(no error)";
}

// Runs fn, expects an equivae::Error whose message holds every substring.
inline void expect_error(const std::function<void()>& fn,
                         std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an equivae::Error";
  } catch (const Error& e) {
    for (const std::string& part : parts) EXPECT_THAT(e.what(), testing::HasSubstr(part));
  }
}

}  // namespace equivae::test
