package main

import (
	"encoding/json"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// ratio is one mtunnel contender's median over a reference's, per figure.
type ratio struct {
	fig       figure
	mt, ref   string
	value     float64
	available bool
}

// ratios pairs every mtunnel contender with direct and stunnel, and each
// contender of the measured build with its counterpart of the -baseline
// build (mtunnel-gmp3 with mtunnel-base-gmp3).
func ratios(res *results, f figureSamples) []ratio {
	var out []ratio
	for _, mt := range res.Contenders {
		if !strings.HasPrefix(mt, "mtunnel") {
			continue
		}
		refs := []string{"direct", "stunnel"}
		if !strings.HasPrefix(mt, baseName) {
			refs = append(refs, strings.Replace(mt, "mtunnel", baseName, 1))
		}
		for _, ref := range refs {
			if !slices.Contains(res.Contenders, ref) {
				continue
			}
			a, b := summarize(f.Samples[mt]), summarize(f.Samples[ref])
			ok := a.N > 0 && b.N > 0 && b.Median != 0
			r := ratio{fig: f.figure, mt: mt, ref: ref, available: ok}
			if ok {
				r.value = a.Median / b.Median
			}
			out = append(out, r)
		}
	}
	return out
}

// renderTable prints median [min-max] per contender and mtunnel's ratios.
func renderTable(res *results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "median [min-max] over %v rounds; %v idle connections; %vs per timed run; ratios are mtunnel's median over the other's\n\n",
		res.Meta["rounds"], res.Meta["idle_conns"], res.Meta["duration_s"])
	head := []string{"figure", "unit"}
	head = append(head, res.Contenders...)
	if len(res.Figures) > 0 {
		for _, r := range ratios(res, res.Figures[0]) {
			head = append(head, r.mt+"/"+r.ref)
		}
	}
	rows := [][]string{head}
	for _, f := range res.Figures {
		row := []string{f.Label, f.Unit}
		for _, c := range res.Contenders {
			s := summarize(f.Samples[c])
			cell := "n/a"
			if s.N > 0 {
				cell = fmt.Sprintf("%s [%s-%s]", fmtNum(s.Median), fmtNum(s.Min), fmtNum(s.Max))
			}
			row = append(row, cell)
		}
		for _, r := range ratios(res, f) {
			cell := "n/a"
			if r.available {
				cell = fmt.Sprintf("%.2fx", r.value)
			}
			row = append(row, cell)
		}
		rows = append(rows, row)
	}
	writeColumns(&b, rows)
	b.WriteString("\nhigher is better for conn/s, MB/s and tps; lower for the rest\n")
	writeProblems(&b, res)
	return b.String()
}

func writeColumns(b *strings.Builder, rows [][]string) {
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			width[i] = max(width[i], len([]rune(cell)))
		}
	}
	for _, row := range rows {
		var line strings.Builder
		for i, cell := range row {
			pad := width[i] - len([]rune(cell))
			if i < 2 {
				line.WriteString(cell + strings.Repeat(" ", pad))
			} else {
				line.WriteString(strings.Repeat(" ", pad) + cell)
			}
			line.WriteString("  ")
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}

// writeProblems lists load errors, agents' warnings and errors, and
// shutdown trouble: the evidence when a contender misbehaves.
func writeProblems(b *strings.Builder, res *results) {
	for _, c := range append(slices.Clone(res.Contenders), "postgres") {
		for _, e := range res.Errors[c] {
			fmt.Fprintf(b, "%s: round %d %s: %d errors, first: %s\n", c, e.Round, e.Workload, e.Count, e.First)
		}
		logs := res.Logs[c]
		if logs == nil || len(logs.Levels) == 0 {
			continue
		}
		fmt.Fprintf(b, "%s logs: %d info, %d warn, %d error lines\n", c, logs.Levels["INFO"], logs.Levels["WARN"], logs.Levels["ERROR"])
		keys := make([]string, 0, len(logs.Problems))
		for k := range logs.Problems {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(x, y string) int { return logs.Problems[y] - logs.Problems[x] })
		for i, k := range keys {
			if i == 8 {
				fmt.Fprintf(b, "  ... %d more kinds\n", len(keys)-i)
				break
			}
			fmt.Fprintf(b, "  %6d x %s\n", logs.Problems[k], k)
		}
	}
	for _, s := range res.Shutdown {
		fmt.Fprintln(b, "shutdown:", s)
	}
}

// writeOutputs writes latest.json, latest.svg and latest.txt into dir.
func writeOutputs(res *results, table, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"latest.json": append(js, '\n'),
		"latest.svg":  []byte(renderSVG(res)),
		"latest.txt":  []byte(table),
	}
	var paths []string
	for _, name := range []string{"latest.json", "latest.svg", "latest.txt"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, files[name], 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// renderSVG draws mtunnel's ratios as horizontal bars on a log2 scale
// around 1x: green where mtunnel does better, red where worse.
func renderSVG(res *results) string {
	var rs []ratio
	for _, f := range res.Figures {
		for _, r := range ratios(res, f) {
			if r.available && r.value > 0 {
				rs = append(rs, r)
			}
		}
	}
	span := 1.0 // log2 units each side of 1x
	for _, r := range rs {
		span = max(span, math.Ceil(math.Abs(math.Log2(r.value))))
	}
	const labelW, chartW, rowH, top = 420.0, 520.0, 20.0, 60.0
	mid := labelW + chartW/2
	x := func(v float64) float64 { return mid + math.Log2(v)/span*chartW/2 }
	height := top + rowH*float64(len(rs)) + 40
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n",
		labelW+chartW+80, height)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	fmt.Fprintf(&b, `<text x="10" y="22" font-size="15">mtunnel ratios (median over median, %v rounds; log scale; green = mtunnel better)</text>`+"\n", res.Meta["rounds"])
	// A grid line per power of two, labelled at least 40 px apart.
	every := int(math.Ceil(40 / (chartW / 2 / span)))
	for k := -int(span); k <= int(span); k++ {
		v := math.Pow(2, float64(k))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="%s"/>`+"\n", x(v), top-8, x(v), height-30,
			map[bool]string{true: "black", false: "#ddd"}[k == 0])
		if k%every != 0 {
			continue
		}
		label := fmt.Sprintf("%.0fx", v)
		if k < 0 {
			label = fmt.Sprintf("1/%.0fx", 1/v)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" fill="#555">%s</text>`+"\n", x(v), top-14, label)
	}
	for i, r := range rs {
		y := top + rowH*float64(i)
		better := (r.value > 1) == r.fig.Higher
		color := map[bool]string{true: "#2e7d32", false: "#c62828"}[better]
		x0, x1 := min(x(1), x(r.value)), max(x(1), x(r.value))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", labelW-8, y+14,
			html.EscapeString(fmt.Sprintf("%s (%s) %s/%s", strings.TrimSpace(r.fig.Label), r.fig.Unit, r.mt, r.ref)))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.0f" fill="%s"/>`+"\n", x0, y+3, max(x1-x0, 1), rowH-6, color)
		// The value sits right of the bar's end, or right of 1x for a bar
		// that grows left, clear of the labels.
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%.2fx</text>`+"\n", max(x1, mid)+4, y+14, r.value)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
