#include "shared/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hoist {
namespace {

using ::testing::HasSubstr;

TEST(MetricsTest, CounterRendersHelpTypeAndValue) {
  MetricsRegistry r;
  Counter& c = r.AddCounter("hoist_steps_total", "Steps dispatched.");
  EXPECT_EQ(r.Render(),
            "# HELP hoist_steps_total Steps dispatched.\n"
            "# TYPE hoist_steps_total counter\n"
            "hoist_steps_total 0\n")
      << "an unlabelled metric shows 0 before its first update";
  c.Increment();
  c.Increment(2.5);
  c.Increment(-10);  // ignored: counters never fall
  EXPECT_EQ(c.Value(), 3.5);
  EXPECT_THAT(r.Render(), HasSubstr("\nhoist_steps_total 3.5\n"));
}

TEST(MetricsTest, GaugeGoesBothWays) {
  MetricsRegistry r;
  Gauge& g = r.AddGauge("hoist_agents_connected", "Agents with an open session.");
  g.Set(10);
  g.Increment();
  g.Decrement(3);
  EXPECT_EQ(r.Render(),
            "# HELP hoist_agents_connected Agents with an open session.\n"
            "# TYPE hoist_agents_connected gauge\n"
            "hoist_agents_connected 8\n");
}

TEST(MetricsTest, LabelledChildrenRenderSortedByLabelValues) {
  MetricsRegistry r;
  CounterFamily& rpcs = r.AddCounterFamily("hoist_rpcs_total", "RPCs served.", {"method", "code"});
  rpcs.WithLabels({"Session", "OK"}).Increment();
  rpcs.WithLabels({"GetStatus", "OK"}).Increment(2);
  rpcs.WithLabels({"Session", "OK"}).Increment();
  EXPECT_EQ(r.Render(),
            "# HELP hoist_rpcs_total RPCs served.\n"
            "# TYPE hoist_rpcs_total counter\n"
            "hoist_rpcs_total{method=\"GetStatus\",code=\"OK\"} 2\n"
            "hoist_rpcs_total{method=\"Session\",code=\"OK\"} 2\n");
}

TEST(MetricsTest, LabelValuesAndHelpAreEscaped) {
  MetricsRegistry r;
  GaugeFamily& g = r.AddGaugeFamily("hoist_info", "Build info.\nSecond line with \\ backslash.", {"version"});
  g.WithLabels({"a\"b\\c\nd"}).Set(1);
  EXPECT_EQ(r.Render(),
            "# HELP hoist_info Build info.\\nSecond line with \\\\ backslash.\n"
            "# TYPE hoist_info gauge\n"
            "hoist_info{version=\"a\\\"b\\\\c\\nd\"} 1\n");
  EXPECT_EQ(EscapeLabelValue("plain"), "plain");
}

TEST(MetricsTest, HistogramBucketsAreCumulativeWithSumAndCount) {
  MetricsRegistry r;
  Histogram& h = r.AddHistogram("hoist_health_wait_seconds", "Health waits.", {1, 2, 5});
  for (double v : {0.5, 1.0, 1.5, 3.0, 10.0}) h.Observe(v);
  EXPECT_EQ(r.Render(),
            "# HELP hoist_health_wait_seconds Health waits.\n"
            "# TYPE hoist_health_wait_seconds histogram\n"
            "hoist_health_wait_seconds_bucket{le=\"1\"} 2\n"
            "hoist_health_wait_seconds_bucket{le=\"2\"} 3\n"
            "hoist_health_wait_seconds_bucket{le=\"5\"} 4\n"
            "hoist_health_wait_seconds_bucket{le=\"+Inf\"} 5\n"
            "hoist_health_wait_seconds_sum 16\n"
            "hoist_health_wait_seconds_count 5\n");
}

TEST(MetricsTest, LabelledHistogramPutsLeLast) {
  MetricsRegistry r;
  HistogramFamily& h = r.AddHistogramFamily("hoist_step_seconds", "Step durations.", {"kind"}, {0.25});
  h.WithLabels({"pull"}).Observe(0.1);
  std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("hoist_step_seconds_bucket{kind=\"pull\",le=\"0.25\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("hoist_step_seconds_bucket{kind=\"pull\",le=\"+Inf\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("hoist_step_seconds_sum{kind=\"pull\"} 0.1\n"));
  EXPECT_THAT(text, HasSubstr("hoist_step_seconds_count{kind=\"pull\"} 1\n"));
}

TEST(MetricsTest, FamiliesRenderSortedByName) {
  MetricsRegistry r;
  r.AddGauge("b_metric", "B.");
  r.AddCounter("a_metric_total", "A.");
  std::string text = r.Render();
  EXPECT_LT(text.find("a_metric_total"), text.find("b_metric"));
}

TEST(MetricsTest, RegisteringTheSameMetricAgainReturnsIt) {
  MetricsRegistry r;
  Counter& a = r.AddCounter("hoist_x_total", "X.");
  Counter& b = r.AddCounter("hoist_x_total", "X.");
  EXPECT_EQ(&a, &b);
}

TEST(MetricsDeathTest, MisuseAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  MetricsRegistry r;
  r.AddCounter("hoist_x_total", "X.");
  EXPECT_DEATH(r.AddGauge("hoist_x_total", "X."), "already registered");
  EXPECT_DEATH(r.AddCounter("bad-name", "X."), "not a valid metric name");
  EXPECT_DEATH(r.AddCounterFamily("hoist_y_total", "Y.", {"__reserved"}), "not a valid label name");
  EXPECT_DEATH(r.AddHistogram("hoist_h", "H.", {2, 1}), "strictly increasing");
  CounterFamily& f = r.AddCounterFamily("hoist_z_total", "Z.", {"a", "b"});
  EXPECT_DEATH(f.WithLabels({"only-one"}), "got 1 values");
}

TEST(MetricsTest, ConcurrentUpdatesAreAllCounted) {
  MetricsRegistry r;
  CounterFamily& c = r.AddCounterFamily("hoist_c_total", "C.", {"t"});
  Histogram& h = r.AddHistogram("hoist_h", "H.", {1});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.WithLabels({"same"}).Increment();
        h.Observe(0.5);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.WithLabels({"same"}).Value(), 40000);
  Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.count, 40000u);
  EXPECT_EQ(s.cumulative[0], 40000u);
  EXPECT_EQ(s.sum, 20000);
}

TEST(MetricsTest, ValuesFormatTheWayPrometheusParsesThem) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(1234567), "1234567");
  EXPECT_EQ(FormatMetricValue(1000000), "1000000");
  EXPECT_EQ(FormatMetricValue(1e300), "1e+300");
  EXPECT_EQ(FormatMetricValue(0.005), "0.005");
  EXPECT_EQ(FormatMetricValue(-2.5), "-2.5");
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatMetricValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatMetricValue(std::nan("")), "NaN");
}

TEST(MetricsTest, BucketHelpers) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  std::vector<double> d = DefaultLatencyBuckets();
  EXPECT_TRUE(std::is_sorted(d.begin(), d.end()));
  EXPECT_EQ(d.front(), 0.005);
}

}  // namespace
}  // namespace hoist
