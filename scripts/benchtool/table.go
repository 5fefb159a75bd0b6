//go:build linux

package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// metric is one row of a result table: a value per column (target) per run.
type metric struct {
	name   string
	unit   string
	format string // fmt verb for one value
	lower  bool   // lower is better
	vals   map[string][]float64
}

func newMetric(name, unit, format string, lower bool) *metric {
	return &metric{name: name, unit: unit, format: format, lower: lower, vals: map[string][]float64{}}
}

func (m *metric) add(col string, v float64) { m.vals[col] = append(m.vals[col], v) }

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func (m *metric) median(col string) float64 { return median(m.vals[col]) }

func (m *metric) cell(col string) string {
	v := m.vals[col]
	if len(v) == 0 {
		return "n/a"
	}
	f := func(x float64) string { return fmt.Sprintf(m.format, x) }
	if len(v) == 1 {
		return f(v[0]) + " (1 run)"
	}
	return fmt.Sprintf("%s [%s..%s]", f(median(v)), f(slices.Min(v)), f(slices.Max(v)))
}

// ratio is our column's median over the reference column's median.
type ratio struct{ num, den, title string }

// table prints metrics as rows and cols as columns (median [min..max] over
// the runs), then one column per ratio of medians.
func printTable(w io.Writer, cols []string, ratios []ratio, rows []*metric, notes map[string]string) {
	head := []string{"metric"}
	head = append(head, cols...)
	for _, r := range ratios {
		head = append(head, r.title)
	}
	var lines [][]string
	for _, m := range rows {
		name := m.name
		if m.unit != "" {
			name += " (" + m.unit + ")"
		}
		if m.lower {
			name += " ↓"
		} else {
			name += " ↑"
		}
		line := []string{name}
		for _, c := range cols {
			line = append(line, m.cell(c))
		}
		for _, r := range ratios {
			a, b := m.median(r.num), m.median(r.den)
			if math.IsNaN(a) || math.IsNaN(b) || b == 0 || len(m.vals[r.num]) == 0 || len(m.vals[r.den]) == 0 {
				line = append(line, "-")
			} else {
				line = append(line, fmt.Sprintf("%.2fx", a/b))
			}
		}
		lines = append(lines, line)
	}
	width := make([]int, len(head))
	for _, l := range append([][]string{head}, lines...) {
		for i, c := range l {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	pr := func(l []string) {
		var b strings.Builder
		for i, c := range l {
			if i > 0 {
				b.WriteString("  ")
			}
			b.WriteString(c)
			if i < len(l)-1 {
				b.WriteString(strings.Repeat(" ", width[i]-len([]rune(c))))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	pr(head)
	for _, l := range lines {
		pr(l)
	}
	for _, c := range cols {
		if n := notes[c]; n != "" {
			fmt.Fprintf(w, "  %s: %s\n", c, n)
		}
	}
}
