#include "shared/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace hoist {
namespace {

[[noreturn]] void Misuse(const std::string& what) {
  // Straight to stderr: the process is about to abort, whatever logger is set.
  std::fprintf(stderr, "metrics registry misuse: %s\n", what.c_str());
  std::abort();
}

bool ValidMetricName(absl::string_view name) {
  if (name.empty() || absl::ascii_isdigit(name.front())) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return absl::ascii_isalnum(c) || c == '_' || c == ':'; });
}

bool ValidLabelName(absl::string_view name) {
  if (name.empty() || absl::ascii_isdigit(name.front()) || absl::StartsWith(name, "__")) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return absl::ascii_isalnum(c) || c == '_'; });
}

std::string EscapeHelp(absl::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

absl::string_view KindName(MetricFamilyBase::Kind kind) {
  switch (kind) {
    case MetricFamilyBase::Kind::kCounter: return "counter";
    case MetricFamilyBase::Kind::kGauge: return "gauge";
    case MetricFamilyBase::Kind::kHistogram: return "histogram";
  }
  return "untyped";
}

}  // namespace

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Whole numbers print as integers: shortest form alone would write 1e+06.
  if (std::abs(value) < 1e15 && value == std::trunc(value)) return absl::StrCat(static_cast<int64_t>(value));
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  if (ec != std::errc()) return absl::StrCat(value);
  return std::string(buf, end);
}

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void Counter::Increment(double by) {
  if (!(by >= 0)) return;  // also drops NaN
  value_.fetch_add(by, std::memory_order_relaxed);
}

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  // The first bucket whose bound is >= value; past the end is +Inf.
  size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  if (std::isnan(value)) i = bounds_.size();
  absl::MutexLock lock(&mu_);
  ++counts_[i];
  sum_ += value;
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.bounds = bounds_;
  absl::MutexLock lock(&mu_);
  uint64_t running = 0;
  for (uint64_t c : counts_) {
    running += c;
    s.cumulative.push_back(running);
  }
  s.sum = sum_;
  s.count = running;
  return s;
}

std::vector<double> DefaultLatencyBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1) {
    Misuse(absl::StrCat("ExponentialBuckets(", start, ", ", factor, ", ", count,
                        ") needs start > 0, factor > 1, count >= 1"));
  }
  std::vector<double> out;
  for (int i = 0; i < count; ++i, start *= factor) out.push_back(start);
  return out;
}

MetricFamilyBase::MetricFamilyBase(Kind kind, std::string name, std::string help,
                                   std::vector<std::string> label_names)
    : kind_(kind), name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)) {}

void MetricFamilyBase::CheckLabelCount(const std::vector<std::string>& values) const {
  if (values.size() != label_names_.size()) {
    Misuse(absl::StrCat(name_, " has labels (", absl::StrJoin(label_names_, ", "), ") but got ", values.size(),
                        " values"));
  }
}

std::string MetricFamilyBase::LabelText(const std::vector<std::string>& values, absl::string_view extra) const {
  std::vector<std::string> pairs;
  for (size_t i = 0; i < values.size(); ++i) {
    pairs.push_back(absl::StrCat(label_names_[i], "=\"", EscapeLabelValue(values[i]), "\""));
  }
  if (!extra.empty()) pairs.emplace_back(extra);
  if (pairs.empty()) return "";
  return absl::StrCat("{", absl::StrJoin(pairs, ","), "}");
}

std::string MetricFamilyBase::Header() const {
  return absl::StrCat("# HELP ", name_, " ", EscapeHelp(help_), "\n# TYPE ", name_, " ", KindName(kind_), "\n");
}

void MetricFamilyBase::RenderSample(std::string* out, const std::vector<std::string>& values, double value) const {
  absl::StrAppend(out, name_, LabelText(values), " ", FormatMetricValue(value), "\n");
}

void MetricFamilyBase::RenderHistogram(std::string* out, const std::vector<std::string>& values,
                                       const Histogram::Snapshot& s) const {
  for (size_t i = 0; i <= s.bounds.size(); ++i) {
    std::string le = i < s.bounds.size() ? FormatMetricValue(s.bounds[i]) : "+Inf";
    absl::StrAppend(out, name_, "_bucket", LabelText(values, absl::StrCat("le=\"", le, "\"")), " ",
                    s.cumulative[i], "\n");
  }
  absl::StrAppend(out, name_, "_sum", LabelText(values), " ", FormatMetricValue(s.sum), "\n");
  absl::StrAppend(out, name_, "_count", LabelText(values), " ", s.count, "\n");
}

template <typename M>
MetricFamily<M>& MetricsRegistry::Add(MetricFamilyBase::Kind kind, const std::string& name, const std::string& help,
                                      std::vector<std::string> label_names, std::vector<double> bounds) {
  if (!ValidMetricName(name)) Misuse(absl::StrCat("\"", name, "\" is not a valid metric name"));
  for (const auto& l : label_names) {
    if (!ValidLabelName(l)) Misuse(absl::StrCat(name, ": \"", l, "\" is not a valid label name"));
    if (kind == MetricFamilyBase::Kind::kHistogram && l == "le") {
      Misuse(absl::StrCat(name, ": a histogram cannot have a label named le"));
    }
  }
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
      Misuse(absl::StrCat(name, ": histogram buckets must be finite and strictly increasing"));
    }
  }
  absl::MutexLock lock(&mu_);
  auto it = families_.find(name);
  if (it != families_.end()) {
    MetricFamilyBase* f = it->second.get();
    if (f->kind() != kind || f->label_names() != label_names || bounds_[name] != bounds) {
      Misuse(absl::StrCat(name, " is already registered as a ", KindName(f->kind()), " with labels (",
                          absl::StrJoin(f->label_names(), ", "), ") and other buckets"));
    }
    return static_cast<MetricFamily<M>&>(*f);
  }
  std::function<std::unique_ptr<M>()> make;
  if constexpr (std::is_same_v<M, Histogram>) {
    make = [bounds] { return std::make_unique<Histogram>(bounds); };
  } else {
    make = [] { return std::make_unique<M>(); };
  }
  bool unlabelled = label_names.empty();
  auto family = std::make_unique<MetricFamily<M>>(kind, name, help, std::move(label_names), std::move(make));
  MetricFamily<M>& ref = *family;
  bounds_[name] = std::move(bounds);
  families_[name] = std::move(family);
  // An unlabelled metric exists from the start, so it renders as 0 before
  // its first update.
  if (unlabelled) ref.WithLabels({});
  return ref;
}

Counter& MetricsRegistry::AddCounter(const std::string& name, const std::string& help) {
  return AddCounterFamily(name, help, {}).WithLabels({});
}

CounterFamily& MetricsRegistry::AddCounterFamily(const std::string& name, const std::string& help,
                                                 std::vector<std::string> label_names) {
  return Add<Counter>(MetricFamilyBase::Kind::kCounter, name, help, std::move(label_names), {});
}

Gauge& MetricsRegistry::AddGauge(const std::string& name, const std::string& help) {
  return AddGaugeFamily(name, help, {}).WithLabels({});
}

GaugeFamily& MetricsRegistry::AddGaugeFamily(const std::string& name, const std::string& help,
                                             std::vector<std::string> label_names) {
  return Add<Gauge>(MetricFamilyBase::Kind::kGauge, name, help, std::move(label_names), {});
}

Histogram& MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                         std::vector<double> bounds) {
  return AddHistogramFamily(name, help, {}, std::move(bounds)).WithLabels({});
}

HistogramFamily& MetricsRegistry::AddHistogramFamily(const std::string& name, const std::string& help,
                                                     std::vector<std::string> label_names,
                                                     std::vector<double> bounds) {
  return Add<Histogram>(MetricFamilyBase::Kind::kHistogram, name, help, std::move(label_names), std::move(bounds));
}

std::string MetricsRegistry::Render() const {
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, family] : families_) family->Render(&out);
  return out;
}

}  // namespace hoist
