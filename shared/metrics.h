#pragma once

// A small Prometheus registry: counters, gauges and fixed-bucket histograms,
// each optionally split by labels, rendered in the text exposition format
// (version 0.0.4) for hoistd's /metrics. Everything here is thread-safe;
// metric objects live as long as the registry, so callers keep references
// (Counter&, MetricFamily<...>&) and update them without lookups.
//
//   MetricsRegistry metrics;
//   Counter& steps = metrics.AddCounter("hoist_steps_total", "Steps dispatched.");
//   auto& rpcs = metrics.AddCounterFamily("hoist_rpcs_total", "RPCs served.", {"method", "code"});
//   auto& wait = metrics.AddHistogram("hoist_health_wait_seconds", "Health waits.", DefaultLatencyBuckets());
//   steps.Increment();
//   rpcs.WithLabels({"Connect", "OK"}).Increment();
//   wait.Observe(1.7);
//   std::string text = metrics.Render();   // serve with kPrometheusContentType
//
// Registration mistakes (an invalid metric or label name, the same name
// registered as another kind or with other labels, a wrong number of label
// values) are programming errors: they log and abort, like an out-of-range
// index, so that the first test run finds them.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace hoist {

// The Content-Type of Render()'s output.
inline constexpr absl::string_view kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

// A value that only goes up (requests served, steps failed).
class Counter {
 public:
  // Adds `by`; negative or NaN amounts are ignored (a counter never falls).
  void Increment(double by = 1);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down (connected agents, leader or not).
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Increment(double by = 1) { value_.fetch_add(by, std::memory_order_relaxed); }
  void Decrement(double by = 1) { value_.fetch_sub(by, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Counts observations into fixed buckets by upper bound (le = "less than or
// equal"), plus their sum and count.
class Histogram {
 public:
  // `bounds` must be strictly increasing and finite; +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);

  void Observe(double value);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // per bound, then +Inf (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  // A consistent copy: buckets, sum and count from the same instant.
  Snapshot Read() const;

 private:
  const std::vector<double> bounds_;
  mutable absl::Mutex mu_;
  std::vector<uint64_t> counts_ ABSL_GUARDED_BY(mu_);  // per bucket, last is +Inf
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
};

// Buckets for durations in seconds, from 5 ms to 60 s.
std::vector<double> DefaultLatencyBuckets();
// `count` bounds: start, start*factor, start*factor^2, ...
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// The type-independent part of a metric family, for the registry.
class MetricFamilyBase {
 public:
  enum class Kind { kCounter, kGauge, kHistogram };

  MetricFamilyBase(Kind kind, std::string name, std::string help, std::vector<std::string> label_names);
  virtual ~MetricFamilyBase() = default;

  Kind kind() const { return kind_; }
  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  // Appends this family's HELP, TYPE and sample lines to `out`.
  virtual void Render(std::string* out) const = 0;

 protected:
  // Aborts unless values has one entry per label name.
  void CheckLabelCount(const std::vector<std::string>& values) const;
  // `{a="x",b="y"` plus `extra` (already formatted) and `}`; empty when
  // there is nothing to put between the braces.
  std::string LabelText(const std::vector<std::string>& values, absl::string_view extra = "") const;
  std::string Header() const;
  // One sample line, or a histogram's _bucket, _sum and _count lines.
  void RenderSample(std::string* out, const std::vector<std::string>& values, double value) const;
  void RenderHistogram(std::string* out, const std::vector<std::string>& values, const Histogram::Snapshot& s) const;

 private:
  const Kind kind_;
  const std::string name_, help_;
  const std::vector<std::string> label_names_;
};

// One metric name and its children, one per combination of label values.
template <typename M>
class MetricFamily final : public MetricFamilyBase {
 public:
  MetricFamily(Kind kind, std::string name, std::string help, std::vector<std::string> label_names,
               std::function<std::unique_ptr<M>()> make)
      : MetricFamilyBase(kind, std::move(name), std::move(help), std::move(label_names)), make_(std::move(make)) {}

  // The child for these label values (in label_names() order), created on
  // first use. The reference stays valid for the registry's lifetime.
  M& WithLabels(const std::vector<std::string>& values) {
    CheckLabelCount(values);
    absl::MutexLock lock(&mu_);
    auto& child = children_[values];
    if (!child) child = make_();
    return *child;
  }

  void Render(std::string* out) const override {
    out->append(Header());
    absl::MutexLock lock(&mu_);
    for (const auto& [values, metric] : children_) {
      if constexpr (std::is_same_v<M, Histogram>) {
        RenderHistogram(out, values, metric->Read());
      } else {
        RenderSample(out, values, metric->Value());
      }
    }
  }

 private:
  const std::function<std::unique_ptr<M>()> make_;
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<M>> children_ ABSL_GUARDED_BY(mu_);
};

using CounterFamily = MetricFamily<Counter>;
using GaugeFamily = MetricFamily<Gauge>;
using HistogramFamily = MetricFamily<Histogram>;

class MetricsRegistry {
 public:
  // Each Add* registers a metric named `name` (Prometheus charset
  // [a-zA-Z_:][a-zA-Z0-9_:]*; counters conventionally end in _total).
  // Registering the same name again with the same kind, labels and buckets
  // returns the existing metric.
  Counter& AddCounter(const std::string& name, const std::string& help);
  CounterFamily& AddCounterFamily(const std::string& name, const std::string& help,
                                  std::vector<std::string> label_names);
  Gauge& AddGauge(const std::string& name, const std::string& help);
  GaugeFamily& AddGaugeFamily(const std::string& name, const std::string& help,
                              std::vector<std::string> label_names);
  Histogram& AddHistogram(const std::string& name, const std::string& help, std::vector<double> bounds);
  HistogramFamily& AddHistogramFamily(const std::string& name, const std::string& help,
                                      std::vector<std::string> label_names, std::vector<double> bounds);

  // Every metric in the text exposition format, families sorted by name and
  // children by label values.
  std::string Render() const;

 private:
  template <typename M>
  MetricFamily<M>& Add(MetricFamilyBase::Kind kind, const std::string& name, const std::string& help,
                       std::vector<std::string> label_names, std::vector<double> bounds);

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<MetricFamilyBase>> families_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<double>> bounds_ ABSL_GUARDED_BY(mu_);  // histograms' buckets
};

// Formats a sample value the way Prometheus parses it: shortest round-trip
// decimal, "+Inf", "-Inf" or "NaN".
std::string FormatMetricValue(double value);
// Escapes a label value: backslash, double quote and newline.
std::string EscapeLabelValue(absl::string_view value);

}  // namespace hoist
