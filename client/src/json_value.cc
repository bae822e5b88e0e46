#include "json_value.h"

#include "absl/strings/str_cat.h"

namespace cab::client_internal {
namespace {

class Parser {
 public:
  explicit Parser(absl::string_view s) : s_(s) {}

  absl::StatusOr<JsonValue> Document() {
    auto v = Value(0);
    if (!v.ok()) return v;
    Skip();
    if (i_ != s_.size()) return Error("trailing characters");
    return v;
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("json: ", what, " at offset ", i_));
  }
  void Skip() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
  }
  absl::StatusOr<JsonValue> Value(int depth) {
    if (depth > 64) return Error("nesting too deep");
    Skip();
    if (i_ >= s_.size()) return Error("unexpected end");
    JsonValue v;
    char c = s_[i_];
    if (c == '{') {
      v.kind = JsonValue::kObject;
      ++i_;
      Skip();
      if (i_ < s_.size() && s_[i_] == '}') { ++i_; return v; }
      while (true) {
        Skip();
        auto key = String();
        if (!key.ok()) return key.status();
        Skip();
        if (i_ >= s_.size() || s_[i_] != ':') return Error("expected ':'");
        ++i_;
        auto item = Value(depth + 1);
        if (!item.ok()) return item;
        v.fields[*key] = std::move(*item);
        Skip();
        if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
        if (i_ < s_.size() && s_[i_] == '}') { ++i_; return v; }
        return Error("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind = JsonValue::kArray;
      ++i_;
      Skip();
      if (i_ < s_.size() && s_[i_] == ']') { ++i_; return v; }
      while (true) {
        auto item = Value(depth + 1);
        if (!item.ok()) return item;
        v.items.push_back(std::move(*item));
        Skip();
        if (i_ < s_.size() && s_[i_] == ',') { ++i_; continue; }
        if (i_ < s_.size() && s_[i_] == ']') { ++i_; return v; }
        return Error("expected ',' or ']'");
      }
    }
    if (c == '"') {
      auto str = String();
      if (!str.ok()) return str.status();
      v.kind = JsonValue::kString;
      v.text = std::move(*str);
      return v;
    }
    for (auto [word, kind, b] : {std::tuple{"true", JsonValue::kBool, true}, {"false", JsonValue::kBool, false},
                                 {"null", JsonValue::kNull, false}}) {
      absl::string_view w(word);
      if (s_.substr(i_, w.size()) == w) {
        i_ += w.size();
        v.kind = kind;
        v.boolean = b;
        return v;
      }
    }
    size_t start = i_;
    while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '-' || s_[i_] == '+' ||
                              s_[i_] == '.' || s_[i_] == 'e' || s_[i_] == 'E'))
      ++i_;
    if (start == i_) return Error("unexpected character");
    v.kind = JsonValue::kNumber;
    v.text = std::string(s_.substr(start, i_ - start));
    return v;
  }
  absl::StatusOr<std::string> String() {
    if (i_ >= s_.size() || s_[i_] != '"') return Error("expected a string");
    ++i_;
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c == '\\') {
        if (i_ >= s_.size()) return Error("unterminated escape");
        char e = s_[i_++];
        switch (e) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'u':  // kept verbatim: tensor names in practice are ASCII
            out += "\\u";
            break;
          default: out += e;
        }
      } else {
        out += c;
      }
    }
    if (i_ >= s_.size()) return Error("unterminated string");
    ++i_;
    return out;
  }

  absl::string_view s_;
  size_t i_ = 0;
};

}  // namespace

absl::StatusOr<JsonValue> ParseJson(absl::string_view text) { return Parser(text).Document(); }

}  // namespace cab::client_internal
