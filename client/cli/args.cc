#include "args.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace cab::cli {

absl::StatusOr<Args> Args::Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0 || arg.size() == 2)
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "' (flags are --name=value)"));
    size_t eq = arg.find('=');
    std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    std::string value = eq == std::string::npos ? "true" : arg.substr(eq + 1);
    if (a.values_.count(name)) return absl::InvalidArgumentError(absl::StrCat("--", name, " given twice"));
    a.values_[name] = value;
  }
  return a;
}

bool Args::Has(const std::string& name) {
  read_.insert(name);
  return values_.count(name) > 0;
}

std::string Args::String(const std::string& name, const std::string& fallback) {
  read_.insert(name);
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

absl::StatusOr<int64_t> Args::Int(const std::string& name, int64_t fallback) {
  read_.insert(name);
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  int64_t v;
  if (!absl::SimpleAtoi(it->second, &v))
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", it->second, "' is not an integer"));
  return v;
}

absl::StatusOr<double> Args::Double(const std::string& name, double fallback) {
  read_.insert(name);
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  double v;
  if (!absl::SimpleAtod(it->second, &v))
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", it->second, "' is not a number"));
  return v;
}

absl::StatusOr<bool> Args::Bool(const std::string& name, bool fallback) {
  read_.insert(name);
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  if (it->second == "true" || it->second == "1") return true;
  if (it->second == "false" || it->second == "0") return false;
  return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", it->second, "' is not true or false"));
}

absl::StatusOr<std::vector<double>> Args::DoubleList(const std::string& name, const std::vector<double>& fallback) {
  read_.insert(name);
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(it->second, ',')) {
    double v;
    if (!absl::SimpleAtod(part, &v))
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", part, "' is not a number"));
    out.push_back(v);
  }
  return out;
}

absl::Status Args::Finish() const {
  std::vector<std::string> unknown;
  for (const auto& [name, value] : values_)
    if (!read_.count(name)) unknown.push_back("--" + name);
  if (unknown.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("unknown flag(s): ", absl::StrJoin(unknown, ", ")));
}

}  // namespace cab::cli
