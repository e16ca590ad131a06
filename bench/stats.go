package main

import (
	"math"
	"slices"
	"time"
)

// figure is one number the bench reports per contender and round.
type figure struct {
	Key    string `json:"key"`
	Label  string `json:"label"`
	Unit   string `json:"unit"`
	Higher bool   `json:"higher_is_better"`
	// AgentsOnly figures measure the contender's processes; direct has none.
	AgentsOnly bool `json:"agents_only"`
}

// figureTable lists the figures in report order.
func figureTable() []figure {
	tput := func(key, label string) []figure {
		return []figure{
			{Key: key, Label: label, Unit: "MB/s", Higher: true},
			{Key: "cpu-" + key, Label: "  agent CPU, " + label, Unit: "s/GiB", AgentsOnly: true},
		}
	}
	fs := []figure{
		{Key: "conn-rate", Label: "connection rate (16 workers)", Unit: "conn/s", Higher: true},
		{Key: "conn-p50", Label: "  connect-to-echo p50", Unit: "µs"},
		{Key: "conn-p99", Label: "  connect-to-echo p99", Unit: "µs"},
		{Key: "conn-cpu", Label: "  agent CPU per connection", Unit: "ms", AgentsOnly: true},
		{Key: "rtt-p50", Label: "64 B round trip p50", Unit: "µs"},
		{Key: "rtt-p99", Label: "64 B round trip p99", Unit: "µs"},
		{Key: "rtt-max", Label: "64 B round trip max", Unit: "µs"},
	}
	fs = append(fs, tput("up-1", "upload, 1 stream")...)
	fs = append(fs, tput("down-1", "download, 1 stream")...)
	fs = append(fs, tput("up-8", "upload, 8 streams")...)
	fs = append(fs, tput("down-8", "download, 8 streams")...)
	return append(fs,
		figure{Key: "hol-p50", Label: "64 B round trip p50 under 8-stream bulk", Unit: "µs"},
		figure{Key: "hol-p99", Label: "64 B round trip p99 under 8-stream bulk", Unit: "µs"},
		figure{Key: "hol-bulk", Label: "  bulk beside it (4 up + 4 down)", Unit: "MB/s", Higher: true},
		figure{Key: "hol-first-p50", Label: "  same, ping connected before the bulk: p50", Unit: "µs"},
		figure{Key: "hol-first-p99", Label: "  same, ping connected before the bulk: p99", Unit: "µs"},
		figure{Key: "hol-first-bulk", Label: "  bulk beside it", Unit: "MB/s", Higher: true},
		figure{Key: "hol-floor-p50", Label: "  floor: a direct ping beside it: p50", Unit: "µs"},
		figure{Key: "hol-floor-p99", Label: "  floor: a direct ping beside it: p99", Unit: "µs"},
		figure{Key: "hol-floor-bulk", Label: "  bulk beside it", Unit: "MB/s", Higher: true},
		figure{Key: "idle-rss", Label: "idle conn RSS, after 1 B echo", Unit: "KiB/conn", AgentsOnly: true},
		figure{Key: "idle-rss-burst", Label: "idle conn RSS, after 64 KiB echo", Unit: "KiB/conn", AgentsOnly: true},
		// pgbenchClients clients each; the labels stay short for the chart.
		figure{Key: "pgbench-tps-C", Label: "pgbench, a connection per transaction (-C)", Unit: "tps", Higher: true},
		figure{Key: "pgbench-tps", Label: "pgbench, persistent connections", Unit: "tps", Higher: true},
	)
}

// summary is the spread of one figure's samples over the rounds.
type summary struct {
	Median, Min, Max float64
	N                int
}

func summarize(xs []float64) summary {
	if len(xs) == 0 {
		return summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return summary{Median: med, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// micros converts durations to sorted microseconds.
func micros(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Microsecond)
	}
	slices.Sort(out)
	return out
}
