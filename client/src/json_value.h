// A small JSON reader (objects, arrays, strings, numbers, true/false/null), enough for the
// safetensors header. Numbers keep their text so that 64-bit offsets stay exact.
#pragma once

#include <map>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace cab::client_internal {

struct JsonValue {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  bool boolean = false;
  std::string text;  // string contents, or a number's literal
  std::vector<JsonValue> items;
  std::map<std::string, JsonValue> fields;
};

absl::StatusOr<JsonValue> ParseJson(absl::string_view text);

}  // namespace cab::client_internal
