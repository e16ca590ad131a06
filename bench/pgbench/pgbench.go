// Package pgbench reads the summary pgbench prints, for the bench program
// and the database tests, which both run PostgreSQL's pgbench through the
// contenders.
package pgbench

import (
	"errors"
	"regexp"
	"strconv"
)

// Result is what a pgbench run reports.
type Result struct {
	Processed int     // transactions actually processed
	Failed    int     // failed transactions
	TPS       float64 // transactions per second
	// FailedReported is whether pgbench said how many failed: pgbench 15
	// and later do; before, no line is not "none failed".
	FailedReported bool
}

var (
	processed = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	failed    = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	tps       = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
)

// Parse reads pgbench's summary from its output.
func Parse(out string) (Result, error) {
	var r Result
	p, t := processed.FindStringSubmatch(out), tps.FindStringSubmatch(out)
	if p == nil || t == nil {
		return r, errors.New("no transaction count or tps in pgbench's output")
	}
	var err error
	if r.Processed, err = strconv.Atoi(p[1]); err != nil {
		return r, err
	}
	if r.TPS, err = strconv.ParseFloat(t[1], 64); err != nil {
		return r, err
	}
	if f := failed.FindStringSubmatch(out); f != nil {
		r.FailedReported = true
		if r.Failed, err = strconv.Atoi(f[1]); err != nil {
			return r, err
		}
	}
	return r, nil
}
