package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// docs/alerts.yaml is a Prometheus rules file: every rule has a name, an
// expression and a severity, and names only metrics the relay exports,
// so that a renamed metric cannot leave an alert that never fires.
func TestAlertRulesNameExportedMetrics(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "docs", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatal(err)
	}
	exported := exportedMetrics(t)
	metric := regexp.MustCompile(`\brelay_[a-z_]+\b`)
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("group %s: rule %q lacks a name, expr, severity or summary", g.Name, r.Alert)
			}
			names := metric.FindAllString(r.Expr, -1)
			if len(names) == 0 {
				t.Errorf("rule %s: names no relay metric: %s", r.Alert, r.Expr)
			}
			for _, m := range names {
				if !exported[m] {
					t.Errorf("rule %s: %s is not a metric the relay exports", r.Alert, m)
				}
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d rules read", n)
	}
}

// exportedMetrics collects the relay_* metric names defined in the
// program's source (histograms also as _bucket, _sum and _count).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	lit := regexp.MustCompile(`Name:\s*"(relay_[a-z_]+)"`)
	out := map[string]bool{}
	for _, dir := range []string{"../../relay", "../../delivery", "../../tenant", "../../cmd"} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range lit.FindAllStringSubmatch(string(src), -1) {
				for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
					out[m[1]+suffix] = true
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(out) < 20 {
		t.Fatalf("found only %d metric names in the source", len(out))
	}
	return out
}

// The README's metrics table names every metric the relay exports, and
// only those: an SRE reads it to know what there is to scrape.
func TestREADMEMetricsTableIsComplete(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "### Metrics")
	if start < 0 {
		t.Fatal("README has no Metrics section")
	}
	section := text[start:]
	if end := strings.Index(section[1:], "\n#"); end >= 0 {
		section = section[:end+1]
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "| `relay_") {
			cell := strings.SplitN(line, "|", 3)[1]
			for _, m := range regexp.MustCompile("`(relay_[a-z_]+)").FindAllStringSubmatch(cell, -1) {
				listed[m[1]] = true
			}
		}
	}
	exported := exportedMetrics(t)
	for name := range exported {
		derived := false // a histogram's _bucket, _sum or _count series
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && exported[b] {
				derived = true
			}
		}
		if !derived && !listed[name] {
			t.Errorf("%s is exported but not in the README's metrics table", name)
		}
	}
	for name := range listed {
		if !exported[name] {
			t.Errorf("the README's metrics table lists %s, which the relay does not export", name)
		}
	}
}
