package bench

import (
	"bytes"
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Report is one self-contained HTML page about one or more runs: a summary
// table and three SVG charts (throughput over time, p50/p99 over time,
// latency by percentile), each run a series of its own. The page needs no
// JavaScript and references nothing outside itself.
type Report struct {
	Title   string    // "relay bench" when empty
	Command string    // the command line that produced the runs
	Date    time.Time // when the runs were made; zero: now
	Runs    []*Result // labelled by Result.Label, else "run 1", "run 2", …
}

// WriteHTMLFile writes the report to the file name.
func (rep Report) WriteHTMLFile(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := rep.WriteHTML(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: write %s: %w", name, err)
	}
	return f.Close()
}

// WriteHTML writes the report page. Machine facts (CPUs, OS/arch, Go
// version, host name) are those of the machine writing the report.
func (rep Report) WriteHTML(w io.Writer) error {
	if rep.Title == "" {
		rep.Title = "relay bench"
	}
	if rep.Date.IsZero() {
		rep.Date = time.Now()
	}
	host, _ := os.Hostname()
	page := reportPage{
		Title:   rep.Title,
		Command: rep.Command,
		Date:    rep.Date.UTC().Format("2006-01-02 15:04:05 MST"),
		Machine: fmt.Sprintf("%s, %d CPUs, %s/%s, %s", host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version()),
	}
	for i, r := range rep.Runs {
		page.Rows = append(page.Rows, summaryRow(runLabel(r, i), r))
		if r.Dropped > 0 {
			page.Warnings = append(page.Warnings, fmt.Sprintf(
				"%s: the generator dropped %d requests: they waited longer than the timeout for a free connection (the target stalled, or too few connections) or the backlog was full. The target rate was not offered; the latencies count them at the time they were given up (at least the timeout), so the percentiles they reach are lower bounds.",
				runLabel(r, i), r.Dropped))
		}
	}
	page.Charts = []template.HTML{
		throughputChart(rep.Runs),
		latencyChart(rep.Runs),
		spectrumChart(rep.Runs),
	}
	var b bytes.Buffer
	if err := pageTemplate.Execute(&b, page); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

type reportPage struct {
	Title, Command, Date, Machine string
	Warnings                      []string
	Rows                          []reportRow
	Charts                        []template.HTML
}

type reportRow struct {
	Label, Mode, Load, Duration, Requests, RPS, Errors, Dropped, Status, SendLag string
	Latency                                                                      Percentiles
}

func runLabel(r *Result, i int) string {
	if r.Label != "" {
		return r.Label
	}
	return "run " + strconv.Itoa(i+1)
}

func summaryRow(label string, r *Result) reportRow {
	row := reportRow{
		Label:    label,
		Mode:     r.Mode,
		Duration: fmt.Sprintf("%.1f s", r.DurationS),
		Requests: strconv.FormatInt(r.Requests, 10),
		RPS:      fmt.Sprintf("%.0f", r.RequestsPerSec),
		Errors:   strconv.FormatInt(r.Errors, 10),
		Dropped:  strconv.FormatInt(r.Dropped, 10),
		Latency:  r.Latency,
	}
	row.SendLag = "–"
	if r.SendLag != nil {
		row.SendLag = strconv.FormatFloat(r.SendLag.P99, 'f', 2, 64)
	}
	switch r.Mode {
	case ModeRate:
		row.Load = fmt.Sprintf("%g/s, %d conns", r.Rate, r.Connections)
	case ModeConcurrency:
		row.Load = fmt.Sprintf("%d workers", r.Concurrency)
	}
	codes := make([]string, 0, len(r.Status))
	for c := range r.Status {
		codes = append(codes, c)
	}
	slices.Sort(codes) // digits sort before "error"
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%s:\u00a0%d", c, r.Status[c]) // no break inside a pair
	}
	row.Status = strings.Join(parts, ", ")
	return row
}

// text escapes s for HTML and breaks "://" so that no text reads as a link
// (the page must carry no URL, even shown as text).
func text(s string) template.HTML {
	return template.HTML(strings.ReplaceAll(html.EscapeString(s), "://", "&#58;//"))
}

var pageTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"text": text,
	"ms":   func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{text .Title}}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 24px auto; max-width: 1100px; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 8px; }
h2 { font-size: 16px; margin: 28px 0 6px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0 0 16px; font-size: 14px; }
dt { color: #666; }
dd { margin: 0; font-family: ui-monospace, Menlo, Consolas, monospace; word-break: break-all; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: right; white-space: nowrap; }
th { background: #f5f5f5; }
td.l, th.l { text-align: left; }
td.status { white-space: normal; min-width: 140px; }
.wide { overflow-x: auto; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; }
.warn { background: #fff3cd; border: 1px solid #e0c36a; padding: 6px 10px; margin: 8px 0; font-size: 14px; }
svg { display: block; width: 100%; height: auto; margin-top: 4px; }
svg text { font-size: 11px; fill: #333; }
svg .title { font-size: 14px; font-weight: 600; }
svg .grid { stroke: #e6e6e6; stroke-width: 1; }
svg .axis { stroke: #888; stroke-width: 1; }
svg .line { fill: none; stroke-width: 1.6; stroke-linejoin: round; }
</style>
</head>
<body>
<h1>{{text .Title}}</h1>
<dl>
<dt>command</dt><dd>{{text .Command}}</dd>
<dt>date</dt><dd>{{text .Date}}</dd>
<dt>machine</dt><dd>{{text .Machine}}</dd>
</dl>
{{range .Warnings}}<div class="warn">{{text .}}</div>
{{end}}<div class="wide"><table>
<tr><th class="l">run</th><th class="l">mode</th><th class="l">load</th><th>window</th><th>requests</th><th>req/s</th><th>errors</th><th>dropped</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th title="open loop: p99 of how late requests went out">send lag p99 ms</th><th class="l">status</th></tr>
{{range $i, $r := .Rows}}<tr><td class="l"><span class="swatch" style="background: {{index $.Colors $i}}"></span>{{text $r.Label}}</td><td class="l">{{text $r.Mode}}</td><td class="l">{{text $r.Load}}</td><td>{{$r.Duration}}</td><td>{{$r.Requests}}</td><td>{{$r.RPS}}</td><td>{{$r.Errors}}</td><td>{{$r.Dropped}}</td><td>{{ms $r.Latency.P50}}</td><td>{{ms $r.Latency.P90}}</td><td>{{ms $r.Latency.P99}}</td><td>{{ms $r.Latency.P999}}</td><td>{{ms $r.Latency.Max}}</td><td>{{$r.SendLag}}</td><td class="l status">{{text $r.Status}}</td></tr>
{{end}}</table></div>
{{range .Charts}}{{.}}
{{end}}</body>
</html>
`))

// Colors returns the series color of each row.
func (p reportPage) Colors() []template.CSS {
	c := make([]template.CSS, len(p.Rows))
	for i := range c {
		c[i] = template.CSS(seriesColor(i))
	}
	return c
}

// palette holds 20 distinct colors: compare --rounds 3 --tenant-counts
// a,b reports 18 runs.
var palette = []string{
	"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
	"#aec7e8", "#ff9896", "#98df8a", "#c5b0d5", "#ffbb78", "#c49c94", "#f7b6d2", "#9edae5", "#dbdb8d", "#393b79",
}

func seriesColor(i int) string { return palette[i%len(palette)] }

// Chart drawing.

const (
	chartW      = 960
	plotH       = 232 // height of the plot area
	plotLeft    = 64
	plotRight   = 40
	plotBottom  = 40
	legendTop   = 32
	legendRowH  = 16
	legendCharW = 6.5 // average width of a legend character at 11px
	targetTicks = 6
)

type line struct {
	name, color, dash string
	x, y              []float64
}

type tick struct {
	v     float64
	label string
}

type axis struct {
	label    string
	min, max float64
	ticks    []tick
}

func throughputChart(runs []*Result) template.HTML {
	var lines []line
	xmax := 0.0
	for i, r := range runs {
		l := line{name: runLabel(r, i), color: seriesColor(i)}
		for _, p := range r.Series {
			l.x = append(l.x, float64(p.T)+p.Seconds/2)
			l.y = append(l.y, p.RPS)
			xmax = max(xmax, float64(p.T)+p.Seconds)
		}
		lines = append(lines, l)
	}
	return drawChart("Throughput (requests answered per second, by second of the answer)",
		linearAxis("time (s)", 0, xmax), linearAxis("req/s", 0, maxY(lines)), lines)
}

func latencyChart(runs []*Result) template.HTML {
	var lines []line
	xmax := 0.0
	for i, r := range runs {
		p50 := line{name: runLabel(r, i) + " p50", color: seriesColor(i)}
		p99 := line{name: runLabel(r, i) + " p99", color: seriesColor(i), dash: "5 3"}
		for _, p := range r.Series {
			x := float64(p.T) + p.Seconds/2
			xmax = max(xmax, float64(p.T)+p.Seconds)
			if p.Latencies == 0 {
				continue // an empty second, or one of instant failures: no latency to show
			}
			p50.x, p50.y = append(p50.x, x), append(p50.y, p.P50)
			p99.x, p99.y = append(p99.x, x), append(p99.y, p.P99)
		}
		lines = append(lines, p50, p99)
	}
	return drawChart("Latency over time (p50 solid, p99 dashed, ms)",
		linearAxis("time (s)", 0, xmax), linearAxis("ms", 0, maxY(lines)), lines)
}

// spectrumChart plots latency by percentile with x = log10(1/(1-p)), so
// 90%, 99%, 99.9%… are evenly spaced, like HdrHistogram's plots.
func spectrumChart(runs []*Result) template.HTML {
	var lines []line
	xmax := 1.0
	for i, r := range runs {
		l := line{name: runLabel(r, i), color: seriesColor(i)}
		last := 0.0
		for _, p := range r.Spectrum {
			if p.Percentile >= 100 {
				// The maximum: at the percentile of the last response.
				x := last + 0.25
				if n := r.Requests - r.Status["error"]; n > 1 {
					x = max(x, math.Log10(float64(n)))
				}
				l.x, l.y = append(l.x, x), append(l.y, p.Ms)
				last = x
				continue
			}
			last = math.Log10(100 / (100 - p.Percentile))
			l.x, l.y = append(l.x, last), append(l.y, p.Ms)
		}
		xmax = max(xmax, last)
		lines = append(lines, l)
	}
	xmax = math.Ceil(xmax)
	x := axis{label: "percentile", min: 0, max: xmax}
	for k := 0; k <= int(xmax); k++ {
		x.ticks = append(x.ticks, tick{v: float64(k), label: percentileLabel(k)})
	}
	return drawChart("Latency by percentile (ms)", x, linearAxis("ms", 0, maxY(lines)), lines)
}

// percentileLabel names the percentile 1-10^-k: 0%, 90%, 99%, 99.9%, …
func percentileLabel(k int) string {
	if k == 0 {
		return "0%"
	}
	return strconv.FormatFloat(100*(1-math.Pow(10, -float64(k))), 'f', max(k-2, 0), 64) + "%"
}

func maxY(lines []line) float64 {
	m := 0.0
	for _, l := range lines {
		for _, v := range l.y {
			m = max(m, v)
		}
	}
	return m
}

// linearAxis returns an axis from lo to a rounded-up hi with evenly spaced
// round ticks.
func linearAxis(label string, lo, hi float64) axis {
	if !(hi > lo) {
		hi = lo + 1
	}
	step := niceStep((hi - lo) / targetTicks)
	hi = math.Ceil(hi/step-1e-9) * step
	a := axis{label: label, min: lo, max: hi}
	exp := math.Floor(math.Log10(step) + 1e-9)
	decimals := -int(exp)
	if math.Abs(step/math.Pow(10, exp)-2.5) < 1e-9 {
		decimals++ // 2.5, 0.25: one digit more than the power of ten
	}
	decimals = max(decimals, 0)
	for v := lo; v <= hi+step/2; v += step {
		a.ticks = append(a.ticks, tick{v: v, label: strconv.FormatFloat(v, 'f', decimals, 64)})
	}
	return a
}

// niceStep rounds raw up to 1, 2, 2.5 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if raw <= m*p*(1+1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// drawChart renders lines as an inline SVG line chart.
func drawChart(title string, xa, ya axis, lines []line) template.HTML {
	pw := float64(chartW - plotLeft - plotRight)
	ph := float64(plotH)
	sx := func(v float64) float64 { return plotLeft + (v-xa.min)/(xa.max-xa.min)*pw }

	// Legend, left to right under the title, wrapping into rows; the plot
	// starts below it.
	var legend strings.Builder
	lx, ly := float64(plotLeft), float64(legendTop)
	for _, l := range lines {
		w := 22 + legendCharW*float64(len([]rune(l.name))) + 18
		if lx > plotLeft && lx+w > chartW-plotRight {
			lx, ly = plotLeft, ly+legendRowH
		}
		fmt.Fprintf(&legend, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`, lx, ly, lx+18, ly, l.color, dashAttr(l.dash))
		fmt.Fprintf(&legend, `<text x="%.1f" y="%.1f">%s</text>`, lx+22, ly+4, text(l.name))
		lx += w
	}
	top := ly + legendRowH - 2
	height := top + ph + plotBottom
	sy := func(v float64) float64 { return top + ph - (v-ya.min)/(ya.max-ya.min)*ph }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %.0f" role="img" aria-label="%s">`, chartW, height, text(title))
	fmt.Fprintf(&b, `<text class="title" x="%d" y="18">%s</text>`, plotLeft, text(title))
	b.WriteString(legend.String())

	// Grid and tick labels.
	for _, t := range ya.ticks {
		y := sy(t.v)
		fmt.Fprintf(&b, `<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`, plotLeft, y, chartW-plotRight, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, plotLeft-6, y+4, text(t.label))
	}
	xticks := xa.ticks
	if xticks == nil {
		xticks = linearAxis("", xa.min, xa.max).ticks
	}
	for _, t := range xticks {
		x := sx(t.v)
		fmt.Fprintf(&b, `<line class="grid" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, x, top, x, top+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x, top+ph+16, text(t.label))
	}
	fmt.Fprintf(&b, `<line class="axis" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`, plotLeft, top+ph, chartW-plotRight, top+ph)
	fmt.Fprintf(&b, `<line class="axis" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`, plotLeft, top, plotLeft, top+ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, plotLeft+pw/2, height-4, text(xa.label))
	fmt.Fprintf(&b, `<text x="14" y="%.1f" text-anchor="middle" transform="rotate(-90 14 %.1f)">%s</text>`, top+ph/2, top+ph/2, text(ya.label))

	drawn := false
	for _, l := range lines {
		if len(l.x) == 0 {
			continue
		}
		drawn = true
		b.WriteString(`<polyline class="line" stroke="` + l.color + `"` + dashAttr(l.dash) + ` points="`)
		for i := range l.x {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", sx(l.x[i]), sy(l.y[i]))
		}
		b.WriteString(`"/>`)
		if len(l.x) == 1 { // a lone point would not show as a line
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>`, sx(l.x[0]), sy(l.y[0]), l.color)
		}
	}
	if !drawn {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">no data</text>`, plotLeft+pw/2, top+ph/2)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func dashAttr(dash string) string {
	if dash == "" {
		return ""
	}
	return ` stroke-dasharray="` + dash + `"`
}
