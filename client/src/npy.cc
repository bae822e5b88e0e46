// NumPy .npy: magic "\x93NUMPY", version bytes, a little-endian header length (2 bytes in v1,
// 4 in v2/v3), then a Python dict literal {'descr': ..., 'fortran_order': ..., 'shape': (...), }
// padded with spaces to a 16- or 64-byte boundary, then the raw array.
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cab/tensor_file.h"

namespace cab {
namespace {

absl::Status Bad(absl::string_view what) { return absl::InvalidArgumentError(absl::StrCat("npy: ", what)); }

// The value after 'key': in the header dict, up to the next top-level ',' or '}'.
absl::StatusOr<std::string> DictValue(absl::string_view header, absl::string_view key) {
  std::string pattern = absl::StrCat("'", key, "'");
  size_t at = header.find(pattern);
  if (at == absl::string_view::npos) return Bad(absl::StrCat("header has no '", key, "'"));
  size_t colon = header.find(':', at + pattern.size());
  if (colon == absl::string_view::npos) return Bad(absl::StrCat("header: no ':' after '", key, "'"));
  size_t i = colon + 1;
  int depth = 0;
  size_t end = i;
  for (; end < header.size(); ++end) {
    char c = header[end];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
  }
  return std::string(absl::StripAsciiWhitespace(header.substr(i, end - i)));
}

}  // namespace

absl::StatusOr<OwnedTensor> ParseNpy(std::string_view contents, const NpyOptions& options) {
  absl::string_view c(contents.data(), contents.size());
  if (c.size() < 10 || std::memcmp(c.data(), "\x93NUMPY", 6) != 0) return Bad("missing magic \\x93NUMPY");
  const unsigned major = static_cast<unsigned char>(c[6]);
  size_t header_len, header_at;
  if (major == 1) {
    header_len = static_cast<unsigned char>(c[8]) | (static_cast<unsigned char>(c[9]) << 8);
    header_at = 10;
  } else if (major == 2 || major == 3) {
    if (c.size() < 12) return Bad("truncated header length");
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= static_cast<size_t>(static_cast<unsigned char>(c[8 + i])) << (8 * i);
    header_at = 12;
  } else {
    return Bad(absl::StrCat("version ", major, " (want 1, 2 or 3)"));
  }
  if (header_at + header_len > c.size()) return Bad("header runs past the end of the file");
  absl::string_view header = c.substr(header_at, header_len);

  auto descr = DictValue(header, "descr");
  if (!descr.ok()) return descr.status();
  OwnedTensor t;
  if (*descr == "'<f4'") {
    t.dtype = DType::kF32;
  } else if (*descr == "'<f2'") {
    t.dtype = DType::kF16;
  } else if (*descr == "'<u2'" && options.u2_as_bf16) {
    t.dtype = DType::kBF16;
  } else if (*descr == "'<u2'") {
    return Bad("descr '<u2': pass the bf16 flag to read uint16 bit patterns as bfloat16");
  } else {
    return Bad(absl::StrCat("descr ", *descr, " (want '<f4', '<f2', or '<u2' as bf16)"));
  }
  auto fortran = DictValue(header, "fortran_order");
  if (!fortran.ok()) return fortran.status();
  if (*fortran != "False") return Bad("fortran_order: only C order (False) is supported");
  auto shape = DictValue(header, "shape");
  if (!shape.ok()) return shape.status();
  absl::string_view s = *shape;
  if (s.size() < 2 || s.front() != '(' || s.back() != ')') return Bad(absl::StrCat("shape ", s, " is not a tuple"));
  s = s.substr(1, s.size() - 2);
  int64_t numel = 1;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipWhitespace())) {
    int64_t d;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &d) || d < 0) return Bad(absl::StrCat("shape: bad dimension '", part, "'"));
    if (d > 0 && numel > (int64_t{1} << 40) / d) return Bad("shape: too many elements");
    t.shape.push_back(d);
    numel *= d;
  }
  const size_t want = static_cast<size_t>(numel) * DTypeSize(t.dtype);
  const size_t have = c.size() - header_at - header_len;
  if (have != want)
    return Bad(absl::StrCat("data: ", have, " bytes for shape (", absl::StrJoin(t.shape, ", "), ") which needs ", want));
  t.bytes.assign(c.data() + header_at + header_len, want);
  return t;
}

std::string WriteNpy(const OwnedTensor& t) {
  const char* descr = t.dtype == DType::kF32 ? "<f4" : t.dtype == DType::kF16 ? "<f2" : "<u2";
  std::string shape = absl::StrJoin(t.shape, ", ");
  if (t.shape.size() == 1) shape += ",";
  std::string header = absl::StrCat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (", shape, "), }");
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out += t.bytes;
  return out;
}

}  // namespace cab
