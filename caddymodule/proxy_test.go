package caddymodule_test

import (
	"io"
	"net"
	"sync"
	"testing"

	"github.com/caddy-messenger/messenger/internal/testenv"
)

// tcpProxy forwards a local port to a server and can be cut and restored, to play a
// database or Redis that goes away and comes back.
type tcpProxy struct {
	t      testing.TB
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	// open is the number of client connections being forwarded, peak its highest value
	// since the last resetPeak.
	open, peak int
}

// resetPeak starts counting the peak of open connections afresh, and returns the old peak.
func (p *tcpProxy) resetPeak() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.peak
	p.peak = p.open
	return old
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	p := &tcpProxy{t: t, target: target, conns: map[net.Conn]bool{}}
	p.listen("127.0.0.1:0")
	t.Cleanup(p.cut)
	return p
}

func (p *tcpProxy) listen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
}

func (p *tcpProxy) forward(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[s] = true, true
	p.open++
	p.peak = max(p.peak, p.open)
	p.mu.Unlock()
	go func() { io.Copy(s, c); s.Close() }()
	io.Copy(c, s)
	c.Close()
	p.mu.Lock()
	p.open--
	p.mu.Unlock()
}

// cut closes the listener and every open connection: the server is gone.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// restore listens again on the same address.
func (p *tcpProxy) restore() { p.listen(p.addr) }

func testenvDSNHost() string { return testenv.ServerDSN() }
