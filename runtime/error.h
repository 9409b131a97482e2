#pragma once
// The engine's one error type: every failure names where it happened (a file,
// a tensor, a flag, a training step) and what is wrong.
#include <stdexcept>
#include <string>

namespace equivae {

class Error : public std::runtime_error {
 public:
  // context: what the error is about, e.g. a file path or "step 1234".
  Error(const std::string& context, const std::string& message)
      : std::runtime_error(context.empty() ? message : context + ": " + message),
        context_(context) {}
  const std::string& context() const { return context_; }

 private:
  std::string context_;
};

// Throws Error(context, message) when the condition does not hold.
inline void check(bool condition, const std::string& context, const std::string& message) {
  if (!condition) throw Error(context, message);
}

}  // namespace equivae
