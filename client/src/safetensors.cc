// .safetensors: an 8-byte little-endian header size H, H bytes of JSON
// {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data; offsets are relative to the end of the header.
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cab/tensor_file.h"
#include "json_value.h"

namespace cab {
namespace {

using client_internal::JsonValue;

absl::Status Bad(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors: ", what));
}

absl::StatusOr<int64_t> Integer(const JsonValue& v, const std::string& what) {
  int64_t x;
  if (v.kind != JsonValue::kNumber || !absl::SimpleAtoi(v.text, &x) || x < 0)
    return Bad(absl::StrCat(what, " is not a non-negative integer"));
  return x;
}

}  // namespace

absl::StatusOr<std::map<std::string, OwnedTensor>> ParseSafetensors(std::string_view contents) {
  absl::string_view c(contents.data(), contents.size());
  if (c.size() < 8) return Bad("file shorter than its 8-byte header size");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(c[i])) << (8 * i);
  if (n > c.size() - 8) return Bad("header size runs past the end of the file");
  auto header = client_internal::ParseJson(c.substr(8, n));
  if (!header.ok()) return Bad(absl::StrCat("header: ", header.status().message()));
  if (header->kind != JsonValue::kObject) return Bad("header is not a JSON object");
  absl::string_view data = c.substr(8 + n);
  std::map<std::string, OwnedTensor> out;
  for (const auto& [name, entry] : header->fields) {
    if (name == "__metadata__") continue;
    const std::string where = absl::StrCat("tensor '", name, "'");
    if (entry.kind != JsonValue::kObject) return Bad(absl::StrCat(where, " is not an object"));
    auto dt = entry.fields.find("dtype");
    auto sh = entry.fields.find("shape");
    auto off = entry.fields.find("data_offsets");
    if (dt == entry.fields.end() || sh == entry.fields.end() || off == entry.fields.end())
      return Bad(absl::StrCat(where, " lacks dtype, shape or data_offsets"));
    OwnedTensor t;
    if (dt->second.text == "F32") t.dtype = DType::kF32;
    else if (dt->second.text == "F16") t.dtype = DType::kF16;
    else if (dt->second.text == "BF16") t.dtype = DType::kBF16;
    else return Bad(absl::StrCat(where, ".dtype '", dt->second.text, "' (want F32, F16 or BF16)"));
    if (sh->second.kind != JsonValue::kArray) return Bad(absl::StrCat(where, ".shape is not an array"));
    int64_t numel = 1;
    for (const auto& d : sh->second.items) {
      auto v = Integer(d, absl::StrCat(where, ".shape"));
      if (!v.ok()) return v.status();
      if (*v > 0 && numel > (int64_t{1} << 40) / *v) return Bad(absl::StrCat(where, ".shape: too many elements"));
      t.shape.push_back(*v);
      numel *= *v;
    }
    if (off->second.kind != JsonValue::kArray || off->second.items.size() != 2)
      return Bad(absl::StrCat(where, ".data_offsets is not [begin, end]"));
    auto b = Integer(off->second.items[0], absl::StrCat(where, ".data_offsets[0]"));
    auto e = Integer(off->second.items[1], absl::StrCat(where, ".data_offsets[1]"));
    if (!b.ok()) return b.status();
    if (!e.ok()) return e.status();
    if (*b > *e || static_cast<uint64_t>(*e) > data.size())
      return Bad(absl::StrCat(where, ".data_offsets [", *b, ", ", *e, "] outside the ", data.size(), " data bytes"));
    if (static_cast<size_t>(*e - *b) != static_cast<size_t>(numel) * DTypeSize(t.dtype))
      return Bad(absl::StrCat(where, ": ", *e - *b, " bytes do not match its shape and dtype"));
    t.bytes.assign(data.data() + *b, *e - *b);
    out[name] = std::move(t);
  }
  return out;
}

std::string WriteSafetensors(const std::map<std::string, OwnedTensor>& tensors) {
  std::string header = "{", data;
  for (const auto& [name, t] : tensors) {
    if (header.size() > 1) header += ",";
    const char* dt = t.dtype == DType::kF32 ? "F32" : t.dtype == DType::kF16 ? "F16" : "BF16";
    std::string shape;
    for (size_t i = 0; i < t.shape.size(); ++i) absl::StrAppend(&shape, i ? "," : "", t.shape[i]);
    absl::StrAppend(&header, "\"", name, "\":{\"dtype\":\"", dt, "\",\"shape\":[", shape, "],\"data_offsets\":[",
                    data.size(), ",", data.size() + t.bytes.size(), "]}");
    data += t.bytes;
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((static_cast<uint64_t>(header.size()) >> (8 * i)) & 0xff);
  return out + header + data;
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<QkTensors> LoadQk(const std::string& spec, const NpyOptions& options) {
  QkTensors out;
  if (absl::EndsWith(spec, ".safetensors")) {
    auto bytes = ReadWholeFile(spec);
    if (!bytes.ok()) return bytes.status();
    auto all = ParseSafetensors(*bytes);
    if (!all.ok()) return all.status();
    auto q = all->find("q"), k = all->find("k");
    if (q == all->end() || k == all->end())
      return absl::InvalidArgumentError(absl::StrCat("input: '", spec, "' must hold tensors named q and k"));
    out.q = std::move(q->second);
    out.k = std::move(k->second);
    return out;
  }
  std::vector<std::string> files = absl::StrSplit(spec, ',');
  if (files.size() != 2 || !absl::EndsWith(files[0], ".npy") || !absl::EndsWith(files[1], ".npy"))
    return absl::InvalidArgumentError(
        absl::StrCat("input: '", spec, "' (want FILE.safetensors with q and k, or Q.npy,K.npy)"));
  for (int i = 0; i < 2; ++i) {
    auto bytes = ReadWholeFile(files[i]);
    if (!bytes.ok()) return bytes.status();
    auto t = ParseNpy(*bytes, options);
    if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat(files[i], ": ", t.status().message()));
    (i == 0 ? out.q : out.k) = std::move(*t);
  }
  return out;
}

}  // namespace cab
