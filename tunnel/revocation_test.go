package tunnel

import (
	"crypto/x509"
	"testing"

	"github.com/mtunnel/mtunnel/certs/certstest"
)

// A certificate that names no OCSP responder: soft lets it in, hard does
// not; a Revocation without an explicit client must not crash.
func TestOCSPModesWithoutResponder(t *testing.T) {
	ca := certstest.New(t)
	chain := []*x509.Certificate{ca.Client(t, "app").Leaf, ca.Cert}
	if err := (&Revocation{OCSP: OCSPSoft}).Check(chain, nil); err != nil {
		t.Errorf("soft: %v, want allowed", err)
	}
	if err := (&Revocation{OCSP: OCSPHard}).Check(chain, nil); Classify(err) != ReasonOCSPUnavailable {
		t.Errorf("hard: %v, want ocsp_unavailable", err)
	}
	if err := (&Revocation{}).Check(chain, nil); err != nil {
		t.Errorf("off: %v", err)
	}
}

func TestParseOCSPMode(t *testing.T) {
	for in, want := range map[string]OCSPMode{"": OCSPOff, "off": OCSPOff, "soft": OCSPSoft, "hard": OCSPHard} {
		if got, err := ParseOCSPMode(in); err != nil || got != want {
			t.Errorf("ParseOCSPMode(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseOCSPMode("strict"); err == nil {
		t.Error("ParseOCSPMode accepted an unknown mode")
	}
}
