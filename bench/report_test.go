package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// syntheticResult records a run of the given length with a stall in second 2.
func syntheticResult(label string, seconds int, base time.Duration) *Result {
	start := time.Unix(1_700_000_000, 0)
	r := NewRecorder(start, time.Duration(seconds)*time.Second)
	for s := range seconds {
		for i := range 500 {
			lat := base + time.Duration(i%50)*base/50
			if s == 2 && i < 100 {
				lat = 40 * base
			}
			done := start.Add(time.Duration(s)*time.Second + time.Duration(i)*time.Millisecond)
			status := 200
			if i%97 == 0 {
				status = 503
			}
			r.Record(done, lat, status)
		}
	}
	res := r.Result(start.Add(time.Duration(seconds) * time.Second))
	res.Label, res.Mode, res.Concurrency, res.Connections = label, ModeConcurrency, 16, 16
	return res
}

func renderReport(t *testing.T, rep Report) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, rep.WriteHTML(&b))
	return b.String()
}

func TestReportSelfContained(t *testing.T) {
	page := renderReport(t, Report{
		Command: "relay bench compare --url https://127.0.0.1:9443/webhooks/meta --rate 5000",
		Date:    time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC),
		Runs: []*Result{
			syntheticResult("ceiling", 10, time.Millisecond),
			syntheticResult("relay", 10, 3*time.Millisecond),
			syntheticResult("<baseline>", 8, 8*time.Millisecond),
		},
	})

	require.Equal(t, 3, strings.Count(page, "<svg"))
	require.Equal(t, 3, strings.Count(page, "</svg>"))
	stripped := strings.ReplaceAll(page, `xmlns="http://www.w3.org/2000/svg"`, "")
	require.NotContains(t, stripped, "http://")
	require.NotContains(t, stripped, "https://")
	lower := strings.ToLower(page)
	for _, banned := range []string{"<script", "<link", "@import", "url(", "<img", "<iframe", "src=", "href="} {
		require.NotContains(t, lower, banned)
	}

	// Summary: command, date, machine, statuses, percentiles.
	require.Contains(t, page, "relay bench compare --url https&#58;//127.0.0.1:9443/webhooks/meta")
	require.Contains(t, page, "2026-11-26 12:00:00 UTC")
	require.Regexp(t, regexp.MustCompile(`\d+ CPUs, \w+/\w+`), page)
	require.Contains(t, page, "200:\u00a04940")
	require.Contains(t, page, "503:\u00a060")
	require.Contains(t, page, "&lt;baseline&gt;", "labels are escaped")
	require.NotContains(t, page, "<baseline>")

	// Every chart is well-formed XML with one polyline per series.
	svgs := regexp.MustCompile(`(?s)<svg.*?</svg>`).FindAllString(page, -1)
	require.Len(t, svgs, 3)
	wantLines := []int{3, 6, 3} // throughput, p50+p99, spectrum
	for i, svg := range svgs {
		d := xml.NewDecoder(strings.NewReader(svg))
		for {
			_, err := d.Token()
			if err == io.EOF {
				break
			}
			require.NoError(t, err, "chart %d", i)
		}
		require.Equal(t, wantLines[i], strings.Count(svg, "<polyline"), "chart %d", i)
	}
}

func TestReportEmptyAndFromJSON(t *testing.T) {
	// A run with no data still renders (axes and "no data").
	page := renderReport(t, Report{Runs: []*Result{{Mode: ModeRate, Rate: 100, Status: map[string]int64{}}}})
	require.Equal(t, 3, strings.Count(page, "<svg"))
	require.Contains(t, page, "no data")
	require.Contains(t, page, "<title>relay bench</title>")

	// A result written as JSON and read back renders the same charts.
	res := syntheticResult("relay", 3, time.Millisecond)
	res.Dropped = 7
	var b bytes.Buffer
	require.NoError(t, res.WriteJSON(&b))
	back, err := ReadResult(&b)
	require.NoError(t, err)
	require.Nil(t, back.Histogram)
	rep := Report{Date: time.Unix(0, 0), Runs: []*Result{back}}
	fromJSON := renderReport(t, rep)
	rep.Runs = []*Result{res}
	require.Equal(t, renderReport(t, rep), fromJSON)
	require.Contains(t, fromJSON, "dropped 7 requests")

	name := filepath.Join(t.TempDir(), "report.html")
	require.NoError(t, rep.WriteHTMLFile(name))
	onDisk, err := os.ReadFile(name)
	require.NoError(t, err)
	require.Equal(t, fromJSON, string(onDisk))
}

func TestResultJSONContract(t *testing.T) {
	res := syntheticResult("relay", 2, time.Millisecond)
	name := filepath.Join(t.TempDir(), "out.json")
	require.NoError(t, res.WriteJSONFile(name))
	raw, err := os.ReadFile(name)
	require.NoError(t, err)

	var doc map[string]any
	require.NoError(t, json.Unmarshal(raw, &doc))
	require.IsType(t, float64(0), doc["requests_per_sec"])
	lat, ok := doc["latency_ms"].(map[string]any)
	require.True(t, ok)
	for _, k := range []string{"p50", "p90", "p99", "p999", "max"} {
		require.IsType(t, float64(0), lat[k], k)
	}
	status, ok := doc["status"].(map[string]any)
	require.True(t, ok)
	require.EqualValues(t, res.Status["200"], status["200"])
	require.EqualValues(t, res.Status["503"], status["503"])
	for _, k := range []string{"requests", "errors", "duration_s", "mode", "series", "spectrum", "dropped"} {
		require.Contains(t, doc, k)
	}
}

func TestPercentileLabels(t *testing.T) {
	require.Equal(t, []string{"0%", "90%", "99%", "99.9%", "99.99%"},
		[]string{percentileLabel(0), percentileLabel(1), percentileLabel(2), percentileLabel(3), percentileLabel(4)})
	a := linearAxis("", 0, 937)
	require.Equal(t, 1000.0, a.max)
	require.Equal(t, "0", a.ticks[0].label)
	require.Equal(t, 0.25, niceStep(0.21))
	require.Equal(t, "2.5", linearAxis("", 0, 14).ticks[1].label)
}

// compare --rounds 3 with two tenant counts reports 18 runs: each gets its
// own color.
func TestReportColorsDistinctForACompareRun(t *testing.T) {
	seen := map[string]int{}
	for i := range 18 {
		c := seriesColor(i)
		_, dup := seen[c]
		require.False(t, dup, "run %d has run %d's color %s", i, seen[c], c)
		seen[c] = i
	}
}
