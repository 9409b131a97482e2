#pragma once
// A small command-line parser: --name value or --name=value, typed getters that
// name the flag in every error, and a generated --help text.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace equivae {

// A whole decimal integer as the flags read one (no spaces, no '+', nothing after it); false
// when text is not one or is beyond int64_t (out_of_range then says which).
bool parse_integer(const std::string& text, int64_t& value, bool* out_of_range = nullptr);
// The same for a decimal number ("1e-3", ".5"; also "inf" and "nan", which callers judge).
bool parse_number(const std::string& text, double& value, bool* out_of_range = nullptr);

class Flags {
 public:
  // Declares a flag; default_value is shown in --help ("" for none). A switch takes no value.
  void add(const std::string& name, const std::string& default_value, const std::string& help,
           bool is_switch = false);
  // Parses argv; throws Error on an unknown flag, a missing value or a repeated flag.
  void parse(int argc, const char* const* argv);
  bool has(const std::string& name) const;       // given on the command line
  bool declared(const std::string& name) const;  // added (the tool takes it)
  std::string get(const std::string& name) const;
  int64_t get_int(const std::string& name, int64_t min, int64_t max) const;
  double get_double(const std::string& name, double min, double max) const;
  bool get_switch(const std::string& name) const;
  std::string help(const std::string& usage) const;

 private:
  struct Spec {
    std::string default_value, help;
    bool is_switch = false;
  };
  const Spec& spec(const std::string& name) const;
  std::map<std::string, Spec> specs_;
  std::vector<std::string> order_;
  std::map<std::string, std::string> values_;
};

}  // namespace equivae
