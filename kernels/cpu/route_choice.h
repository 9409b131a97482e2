#pragma once
// A process-wide choice between a CPU op's routes (ConvRoute, GemmRoute in ops.h): set by code,
// or read once from an environment variable on first use. Routes are an enum whose values
// index `names`; names[0] ("auto") is the automatic choice, and "" means it too.
#include <atomic>
#include <cstdlib>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace equivae::cpu {

// names[i] is Route(i); anything else throws std::invalid_argument naming it and `what`.
template <class Route>
Route route_named(const std::string& name, const std::vector<std::string>& names,
                  const std::string& what) {
  if (name.empty()) return Route(0);
  std::string expected;
  for (size_t i = 0; i < names.size(); ++i) {
    if (name == names[i]) return Route(i);
    expected += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  }
  throw std::invalid_argument(what + " '" + name + "': expected " + expected);
}

template <class Route>
class RouteChoice {
 public:
  RouteChoice(const char* env_var, std::initializer_list<const char*> names, const char* what)
      : env_var_(env_var), names_(names.begin(), names.end()), what_(what) {}

  void set(Route route) { chosen_ = int(route); }
  Route named(const std::string& name) const { return route_named<Route>(name, names_, what_); }
  // The route set, else the environment's (a bad value throws naming the variable), else auto.
  Route get() {
    int route = chosen_.load();
    if (route < 0) {
      const char* name = std::getenv(env_var_);
      try {
        route = int(named(name ? name : ""));
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string(env_var_) + ": " + e.what());
      }
      chosen_ = route;
    }
    return Route(route);
  }

 private:
  const char* env_var_;
  std::vector<std::string> names_;
  std::string what_;
  std::atomic<int> chosen_{-1};
};

}  // namespace equivae::cpu
