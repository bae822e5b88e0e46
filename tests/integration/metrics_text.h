// Reads values out of the Prometheus text exposition format (what cab-server's /metrics serves).
#pragma once

#include <map>
#include <optional>
#include <string>

namespace cab_it {

using Labels = std::map<std::string, std::string>;

// Sum of every sample of metric `name` (exact name, e.g. "cab_requests_total" or
// "cab_request_duration_seconds_count") whose labels include all of `labels`;
// nullopt when no sample matches.
std::optional<double> MetricValue(const std::string& exposition, const std::string& name,
                                  const Labels& labels = {});

}  // namespace cab_it
