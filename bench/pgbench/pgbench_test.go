package pgbench

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	// As printed by pgbench 15.18.
	out := `pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: TPC-B (sort of)>
number of transactions actually processed: 513
number of failed transactions: 2 (0.388%)
latency average = 15.684 ms
tps = 255.044461 (including reconnection times)
`
	if r, err := Parse(out); err != nil || r != (Result{Processed: 513, Failed: 2, TPS: 255.044461, FailedReported: true}) {
		t.Errorf("Parse: %+v, %v", r, err)
	}
	// pgbench before 15 says nothing of failures.
	old := strings.Replace(out, "number of failed transactions: 2 (0.388%)\n", "", 1)
	if r, err := Parse(old); err != nil || r != (Result{Processed: 513, TPS: 255.044461}) {
		t.Errorf("Parse without a failed-transactions line: %+v, %v", r, err)
	}
	if _, err := Parse("pgbench: error: connection to server failed\n"); err == nil {
		t.Error("Parse of an error: no error")
	}
}
