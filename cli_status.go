package main

import (
	"math"
	"time"

	"github.com/mtunnel/mtunnel/tunnel"
)

// statusReport is what the admin endpoint's /status returns and `mtunnel
// status` prints. Its JSON is meant for scripts: add fields, never rename.
type statusReport struct {
	Agent        string          `json:"agent"` // "server" or "client"
	Version      string          `json:"version"`
	Started      time.Time       `json:"started"`
	Time         time.Time       `json:"time"`
	Readiness    readiness       `json:"readiness"`
	Sessions     []statusSession `json:"sessions"`
	Routes       []statusRoute   `json:"routes"`
	Certificates []statusCert    `json:"certificates"`
	CRLs         []statusCRL     `json:"crls"`
	OCSPStaple   *statusStaple   `json:"ocsp_staple,omitempty"` // the server's own, when it staples
}

type statusSession struct {
	ID           string    `json:"id"`
	Peer         string    `json:"peer"`
	Remote       string    `json:"remote"`
	Server       string    `json:"server,omitempty"` // client: the server address dialled
	Established  time.Time `json:"established"`
	AgeSeconds   float64   `json:"age_seconds"`
	Streams      int       `json:"streams"` // open now
	StreamsTotal int64     `json:"streams_total"`
	BytesUp      int64     `json:"bytes_up"`   // app to target
	BytesDown    int64     `json:"bytes_down"` // target to app
	Draining     bool      `json:"draining"`
}

type statusRoute struct {
	Route   string           `json:"route"` // "" for streams naming no configured route (server)
	Open    int64            `json:"open"`
	Total   int64            `json:"total"`   // since start: open, ended and refused
	OK      int64            `json:"ok"`      // ended cleanly
	Denied  int64            `json:"denied"`  // refused by the route's identity rules
	Failed  int64            `json:"failed"`  // every other result
	Results map[string]int64 `json:"results"` // streams that ended or were refused, by result
	Up      int64            `json:"bytes_up"`
	Down    int64            `json:"bytes_down"`
}

type statusCert struct {
	Role     string    `json:"role"` // own, chain, ca, intermediate
	Subject  string    `json:"subject"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
	DaysLeft int       `json:"days_left"` // whole days; negative once expired
}

type statusCRL struct {
	Issuer     string    `json:"issuer"`
	File       string    `json:"file"`
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update,omitzero"`
	AgeSeconds float64   `json:"age_seconds"`
	Revoked    int       `json:"revoked"`
}

type statusStaple struct {
	Status     string    `json:"status"`
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update,omitzero"`
	AgeSeconds float64   `json:"age_seconds"`
}

// status assembles the report from the agent, its metrics and its TLS
// material as they are at now.
func (a *adminEndpoint) status(now time.Time) statusReport {
	r := statusReport{
		Agent: a.agent, Version: version, Started: a.started, Time: now, Readiness: a.view.ready(),
		Sessions: []statusSession{}, Routes: []statusRoute{}, Certificates: []statusCert{}, CRLs: []statusCRL{},
	}
	for _, s := range a.view.sessions() {
		r.Sessions = append(r.Sessions, statusSession{
			ID: s.ID, Peer: s.Peer, Remote: s.Remote, Server: s.Server, Established: s.Established,
			AgeSeconds: seconds(now.Sub(s.Established)), Streams: s.Streams, StreamsTotal: s.StreamsTotal,
			BytesUp: s.Up, BytesDown: s.Down, Draining: s.Draining,
		})
	}
	for _, rs := range a.metrics.Routes() {
		ok, denied := rs.Results[tunnel.ResultOK], rs.Results[tunnel.StatusForbidden.String()]
		r.Routes = append(r.Routes, statusRoute{
			Route: rs.Route, Open: rs.Open, Total: rs.Open + rs.Total(), OK: ok, Denied: denied, Failed: rs.Total() - ok - denied,
			Results: rs.Results, Up: rs.Up, Down: rs.Down,
		})
	}
	for _, c := range a.tls.Certificates() {
		r.Certificates = append(r.Certificates, statusCert{
			Role: c.Role, Subject: c.Subject, Serial: c.Serial, NotAfter: c.NotAfter,
			DaysLeft: int(math.Floor(c.NotAfter.Sub(now).Hours() / 24)),
		})
	}
	for _, c := range a.tls.CRLInfos() {
		r.CRLs = append(r.CRLs, statusCRL{
			Issuer: c.Issuer, File: c.File, ThisUpdate: c.ThisUpdate, NextUpdate: c.NextUpdate,
			AgeSeconds: seconds(now.Sub(c.ThisUpdate)), Revoked: c.Revoked,
		})
	}
	if s := a.tls.Staple(); s != nil {
		r.OCSPStaple = &statusStaple{Status: s.Status, ThisUpdate: s.ThisUpdate, NextUpdate: s.NextUpdate, AgeSeconds: seconds(now.Sub(s.ThisUpdate))}
	}
	return r
}

// seconds rounds d to milliseconds, in seconds.
func seconds(d time.Duration) float64 { return d.Round(time.Millisecond).Seconds() }
