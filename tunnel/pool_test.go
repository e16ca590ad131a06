package tunnel

import (
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// poolOf builds a pool of one server with n sessions, each a real yamux
// session over a pipe, for pickLocked to choose from.
func poolOf(t *testing.T, size, n int) (*Pool, []*member) {
	t.Helper()
	p := &Pool{Size: size, Dialers: []*Dialer{{}}, BusyRate: 1 << 20}
	p.initLocked()
	sp := p.servers[0]
	for range n {
		a, b := net.Pipe()
		ys, err := yamux.Client(a, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ys.Close(); b.Close() })
		m := &member{s: &Session{Session: ys}, sp: sp}
		sp.members = append(sp.members, m)
	}
	return p, sp.members
}

// TestPickAvoidsBusy: pickLocked prefers a quiet session to a busy one
// whatever their stream counts, judges traffic over at least busyWindow,
// asks for a spare (nil, allBusy) only when told to wait for one, and the
// pool allows Size spares per server.
func TestPickAvoidsBusy(t *testing.T) {
	p, ms := poolOf(t, 2, 2)
	t0 := time.Now()
	for _, m := range ms {
		m.busy(t0) // first look: the baseline
	}
	// ms[0] moves 1 MiB in 100 ms (10 MiB/s, busy at 1 MiB/s); ms[1]
	// moves 10 KiB but already has streams reserved.
	ms[0].s.up.Add(1 << 20)
	ms[1].s.down.Add(10 << 10)
	ms[1].opening = 3
	now := t0.Add(busyWindow)
	for range 4 {
		m, allBusy := p.pickLocked(now, true)
		if m != ms[1] || allBusy {
			t.Fatalf("picked %p (allBusy %v), want the quiet session %p", m, allBusy, ms[1])
		}
	}
	// Looks less than busyWindow apart keep the judgement.
	ms[1].s.down.Add(1 << 20)
	if m, _ := p.pickLocked(now.Add(busyWindow/2), true); m != ms[1] {
		t.Fatal("the judgement changed within busyWindow")
	}
	// Both busy: with quiet, nothing is reserved and a spare is wanted;
	// without, the one with fewer streams.
	now = now.Add(busyWindow)
	ms[0].s.up.Add(1 << 20)
	opening := ms[0].opening + ms[1].opening
	if m, allBusy := p.pickLocked(now, true); m != nil || !allBusy {
		t.Fatalf("both busy: picked %v, allBusy %v; want nil, true", m, allBusy)
	}
	if got := ms[0].opening + ms[1].opening; got != opening {
		t.Fatalf("a refused pick reserved a stream (%d -> %d)", opening, got)
	}
	if m, _ := p.pickLocked(now, false); m != ms[0] {
		t.Fatal("both busy, no wait: want the session with fewer streams")
	}
	// Size 2 allows 2 spares: room with 2 and 3 sessions, none with 4.
	if !p.spareRoomLocked() {
		t.Fatal("no room for a spare with 2 sessions of a pool of 2")
	}
	p2, _ := poolOf(t, 2, 4)
	if p2.spareRoomLocked() {
		t.Fatal("room for a fifth session in a pool of 2")
	}
	// After a gap longer than busyStale a look only starts a new measure:
	// what moved since the old look may be a burst long past.
	later := now.Add(busyStale + time.Millisecond)
	ms[0].s.up.Add(100 << 20)
	if ms[0].busy(later) {
		t.Fatal("judged busy on traffic averaged over a stale look")
	}
	ms[0].s.up.Add(1 << 20)
	if !ms[0].busy(later.Add(busyWindow)) {
		t.Fatal("not busy on the next look after the stale one")
	}
	// A negative BusyRate turns it off.
	p.BusyRate = -1
	if m, allBusy := p.pickLocked(now.Add(time.Hour), true); m == nil || allBusy {
		t.Fatal("BusyRate < 0: sessions still judged busy")
	}
}

// TestEveryLossWakesDialLoop: sessions that end together (a server killed),
// a spare beyond the floor first. The dial loop, woken by the first loss,
// finds the floor still met and sleeps; each later loss must wake it again,
// and it must then find a dial due.
func TestEveryLossWakesDialLoop(t *testing.T) {
	p, ms := poolOf(t, 2, 3)
	sp := p.servers[0]
	now := time.Now()
	for i, m := range ms {
		p.mu.Lock()
		sp.members = removeMember(sp.members, m)
		sp.lostLocked(now, m.s)
		p.mu.Unlock()
		select {
		case <-sp.wake:
		default:
			t.Fatalf("loss %d of 3 did not wake the dial loop", i+1)
		}
		_, _, need := sp.next(now)
		if want := i > 0; need != want {
			t.Fatalf("after loss %d of 3: dial wanted %v, want %v", i+1, need, want)
		}
	}
}
