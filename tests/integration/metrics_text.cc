#include "metrics_text.h"

#include <cstdlib>
#include <sstream>

namespace cab_it {
namespace {

// Parses `{a="x",b="y"}` starting at s[pos] == '{'; returns the position after '}' or npos.
size_t ParseLabels(const std::string& s, size_t pos, Labels* out) {
  ++pos;
  while (pos < s.size() && s[pos] != '}') {
    while (pos < s.size() && (s[pos] == ',' || s[pos] == ' ')) ++pos;
    if (pos < s.size() && s[pos] == '}') break;
    const size_t eq = s.find('=', pos);
    if (eq == std::string::npos || eq + 1 >= s.size() || s[eq + 1] != '"') return std::string::npos;
    const std::string key = s.substr(pos, eq - pos);
    std::string value;
    size_t i = eq + 2;
    for (; i < s.size() && s[i] != '"'; ++i) {
      if (s[i] == '\\' && i + 1 < s.size()) {
        ++i;
        value.push_back(s[i] == 'n' ? '\n' : s[i]);
      } else {
        value.push_back(s[i]);
      }
    }
    if (i >= s.size()) return std::string::npos;
    (*out)[key] = value;
    pos = i + 1;
  }
  return pos < s.size() ? pos + 1 : std::string::npos;
}

}  // namespace

std::optional<double> MetricValue(const std::string& exposition, const std::string& name, const Labels& labels) {
  std::istringstream in(exposition);
  std::string line;
  std::optional<double> sum;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.compare(0, name.size(), name) != 0) continue;
    size_t pos = name.size();
    if (pos < line.size() && line[pos] != '{' && line[pos] != ' ') continue;  // a longer name
    Labels got;
    if (pos < line.size() && line[pos] == '{') {
      pos = ParseLabels(line, pos, &got);
      if (pos == std::string::npos) continue;
    }
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = got.find(k);
      if (it == got.end() || it->second != v) match = false;
    }
    if (!match) continue;
    const double v = std::strtod(line.c_str() + pos, nullptr);
    sum = sum.value_or(0) + v;
  }
  return sum;
}

}  // namespace cab_it
