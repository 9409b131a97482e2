#include "runtime/flags.h"

#include <charconv>
#include <cmath>
#include <sstream>

#include "runtime/error.h"

namespace equivae {

void Flags::add(const std::string& name, const std::string& default_value, const std::string& help,
                bool is_switch) {
  specs_[name] = {default_value, help, is_switch};
  order_.push_back(name);
}

const Flags::Spec& Flags::spec(const std::string& name) const {
  auto it = specs_.find(name);
  check(it != specs_.end(), "--" + name, "unknown flag (see --help)");
  return it->second;
}

void Flags::parse(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    check(arg.size() > 2 && arg.rfind("--", 0) == 0, arg,
          "unexpected argument; flags look like --name value (see --help)");
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) value = name.substr(eq + 1), name = name.substr(0, eq);
    const Spec& s = spec(name);
    check(!values_.count(name), "--" + name, "given more than once");
    if (s.is_switch) {
      check(!inline_value || value == "true" || value == "false", "--" + name,
            "is a switch; it takes no value");
      values_[name] = inline_value ? value : "true";
      continue;
    }
    if (!inline_value) {
      check(i + 1 < argc, "--" + name, "needs a value");
      value = argv[++i];
    }
    // An empty value is never meant (an unset shell variable, say: --out "$DIR"), and a path
    // flag would take it as "not given" and quietly drop or redirect the run's output.
    check(!value.empty(), "--" + name, "is empty; give a value or leave the flag out");
    values_[name] = value;
  }
}

bool Flags::has(const std::string& name) const {
  return values_.count(name) > 0;
}

bool Flags::declared(const std::string& name) const {
  return specs_.count(name) > 0;
}

std::string Flags::get(const std::string& name) const {
  const Spec& s = spec(name);
  auto it = values_.find(name);
  return it == values_.end() ? s.default_value : it->second;
}

// Numbers are read strictly, as std::from_chars reads them: decimal only, the whole value, no
// spaces around it, no '+' and no hexadecimal ("0x1p-10"), whichever flag takes them.
bool parse_integer(const std::string& text, int64_t& value, bool* out_of_range) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  const bool whole = !text.empty() && end == text.data() + text.size();
  if (out_of_range) *out_of_range = whole && ec == std::errc::result_out_of_range;
  return whole && ec == std::errc();
}

bool parse_number(const std::string& text, double& value, bool* out_of_range) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  const bool whole = !text.empty() && end == text.data() + text.size();
  if (out_of_range) *out_of_range = whole && ec == std::errc::result_out_of_range;
  return whole && ec == std::errc();
}

int64_t Flags::get_int(const std::string& name, int64_t min, int64_t max) const {
  const std::string text = get(name);
  // Appended, not `"[" + ...`: GCC 12 warns (-Wrestrict) on that temporary's inlined memcpy.
  std::string range = "[";
  range.append(std::to_string(min)).append(", ").append(std::to_string(max)).append("]");
  int64_t value = 0;
  bool out_of_range = false;
  const bool parsed = parse_integer(text, value, &out_of_range);
  check(!out_of_range, "--" + name, text + " is out of range: must be an integer in " + range);
  check(parsed, "--" + name, "expects an integer, got '" + text + "'");
  check(value >= min && value <= max, "--" + name, "must be in " + range + ", got " + text);
  return value;
}

double Flags::get_double(const std::string& name, double min, double max) const {
  const std::string text = get(name);
  std::ostringstream range;
  range << "[" << min << ", " << max << "]";
  double value = 0;
  bool out_of_range = false;
  const bool parsed = parse_number(text, value, &out_of_range);
  check(!out_of_range, "--" + name, text + " is out of range: must be a number in " + range.str());
  check(parsed && std::isfinite(value), "--" + name, "expects a number, got '" + text + "'");
  check(value >= min && value <= max, "--" + name, "must be in " + range.str() + ", got " + text);
  return value;
}

bool Flags::get_switch(const std::string& name) const {
  return get(name) == "true";
}

std::string Flags::help(const std::string& usage) const {
  std::ostringstream s;
  s << usage << "\n\nFlags:\n";
  for (const std::string& name : order_) {
    const Spec& sp = specs_.at(name);
    std::string left = "  --" + name + (sp.is_switch ? "" : " VALUE");
    s << left << std::string(left.size() < 28 ? 28 - left.size() : 1, ' ') << sp.help;
    if (!sp.default_value.empty() && !sp.is_switch) s << " (default: " << sp.default_value << ")";
    s << "\n";
  }
  return s.str();
}

}  // namespace equivae
